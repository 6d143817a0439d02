// Tiling of the attention kernels, and how a CTA finds the rows it works on.
//
// Both kernels stage 16-bit tiles of (rows x head_dim) in shared memory with a padded row pitch
// and feed mma.sync m16n8k16 from them through ldmatrix. The numbers below are chosen for
// registers first (fp32 accumulators live in registers for the whole kernel), then shared memory.
#pragma once
#include <array>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>

#include "attn_params.h"
#include "cuda/check.h"
#include "error.h"

namespace rfa::cuda {

constexpr float kLog2e = 1.4426950408889634f;  // exp(x) = exp2(x * kLog2e)
constexpr int kWarpSize = 32;
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;  // mma.sync.m16n8k16
constexpr int kChunkElems = 8;                    // one 16-byte cp.async / ldmatrix row = 8 x 16-bit

// Row pitch (in elements) of a shared tile with `cols` 16-bit columns. The 8 row addresses of
// one ldmatrix are a pitch apart; an odd number of 16-byte chunks per pitch puts them in 8
// different bank groups (no conflicts), while rows stay 16-byte aligned for cp.async.
constexpr int padded_pitch(int cols) { return cols + kChunkElems; }

// kMTiles_: m-tiles per warp. Two: every K/V fragment loaded by ldmatrix feeds two mma's, which
// halves shared-memory traffic per flop (one m-tile per warp would be bound by ldmatrix). One: the
// d=128 instance with the score hooks, whose per-element work would not fit beside two.
template <int kHeadDim_, int kMTiles_ = 2>
struct FwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * kWarpSize;
  static constexpr int kMTilesPerWarp = kMTiles_;
  static constexpr int kRowsPerWarp = kMTilesPerWarp * kMmaM;
  static constexpr int kBlockM = kRowsPerWarp * kWarps;  // query rows per CTA
  static constexpr int kBlockN = 64;                     // key rows per K/V tile
  static constexpr int kPitch = padded_pitch(kHeadDim);
  static constexpr int kSTiles = kBlockN / kMmaN;                          // n-tiles of S per m-tile
  static constexpr int kOTiles = kHeadDim / kMmaN;                         // n-tiles of O per m-tile
  static constexpr int kDSteps = kHeadDim / kMmaK;                         // k-steps of Q K^T
  static constexpr int kNSteps = kBlockN / kMmaK;                          // k-steps of P V
  static constexpr int kSmemBytes = (kBlockM + 2 * kBlockN) * kPitch * 2;  // Q, K, V (16-bit)
  static constexpr bool kWgmma = false;
  static constexpr int kCtasPerSm = 2;

  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 128,
                "head_dim must be a multiple of 32 (ldmatrix.x4 pairs of n-tiles) and fit the fp32 O "
                "accumulators of 2 m-tiles in registers (<= 128)");
  static_assert(kBlockN % 16 == 0, "K/V tiles are read as pairs of 8-key n-tiles");
  static_assert((kBlockM * kHeadDim / kChunkElems) % kThreads == 0 &&
                    (kBlockN * kHeadDim / kChunkElems) % kThreads == 0,
                "every thread issues the same number of 16-byte copies per tile");
  static_assert(kSmemBytes * 2 <= 227 * 1024, "two CTAs per SM must fit in shared memory");
};

// The forward on Hopper warpgroup MMAs (head_dim 128, sm_90a; flash_fwd.cu). One warpgroup per
// CTA owns kBlockM = 64 query rows, warp w rows 16w.. (one m-tile each, so the register layout
// and the epilogue are FwdTraits' with kMTilesPerWarp = 1); S = Q K^T is m64n64k16 with Q and K
// from 128-byte swizzled shared tiles, O += P V m64n128k16 with P from registers. The CTAs on an
// SM drift apart, so one's softmax runs under another's MMAs. Two residencies:
// - kCtas = 2: K double and V triple buffered (97 KB), the next tiles load from the top of a step
//   (one barrier per step), up to 255 registers;
// - kCtas = 3: K single and V double buffered (65 KB), the next tiles load once S is done (two
//   barriers per step), at most 168 registers. More warps per SM: faster on grids of at least
//   one full wave, slower on smaller ones (flash_fwd.cu picks per launch).
template <int kCtas>
struct FwdWgTraits {
  static constexpr int kHeadDim = 128;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * kWarpSize;
  static constexpr int kMTilesPerWarp = 1;
  static constexpr int kRowsPerWarp = kMmaM;
  static constexpr int kBlockM = kRowsPerWarp * kWarps;
  static constexpr int kBlockN = 64;
  static constexpr int kSTiles = kBlockN / kMmaN;
  static constexpr int kOTiles = kHeadDim / kMmaN;
  static constexpr int kCtasPerSm = kCtas;
  static constexpr int kKStages = kCtas == 3 ? 1 : 2, kVStages = kCtas == 3 ? 2 : 3;
  static constexpr int kTile = 64 * kHeadDim;  // 16-bit elements of a Q, K or V tile
  static constexpr int kSmemBytes =
      (1 + kKStages + kVStages) * kTile * 2 + 1024;  // + 1024-byte alignment slack
  static constexpr bool kWgmma = true;
  static_assert(kCtas == 2 || kCtas == 3, "two or three CTAs per SM");
  static_assert(kBlockM == 64 && kBlockN == 64, "one m64 warpgroup MMA per tile; n64 scores");
  static_assert(kCtas * (kSmemBytes + 1024) <= 228 * 1024, "the CTAs of an SM must fit in shared memory");
};

// The Hopper forward in the FlashAttention-3 structure (native/cuda/fwd/, sm_90a). A persistent
// CTA of three warpgroups: warpgroup 0 is the producer (one thread issues every TMA copy, its
// registers handed to the others with setmaxnreg), warpgroups 1 and 2 are consumers that own
// query rows 0..63 and 64..127 of a kBlockM = 128 tile and share its K/V tiles. K and V stream
// through kStages shared stages, each guarded by a full (TMA bytes) and an empty (consumer warps)
// mbarrier. Per key tile a consumer issues S = Q K^T (m64 x kBlockN, Q and K from 128-byte
// swizzled tiles) together with the previous tile's O += P V (P from registers) and runs its
// softmax under the P V; the two consumers take turns issuing (ping-pong), so one's softmax runs
// under the other's MMAs.
// kBlockN_ / kStages_ (0: the defaults below) exist for the harness's variants.
template <int kHeadDim_, int kBlockN_ = 0, int kStages_ = 0>
struct FwdHopperTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWgThreads = 4 * kWarpSize;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = (kConsumers + 1) * kWgThreads;
  static constexpr int kBlockM = 64 * kConsumers;
  // Wide key tiles make each consumer's turn long enough to hide the other's softmax (head_dim 64
  // has the shortest turns per key, so the widest tiles); head_dim 192 and 256 narrow them so
  // that O (head_dim / 2 fp32 per thread) and S still fit in registers and two stages still fit
  // in shared memory.
  static constexpr int kBlockN = kBlockN_          ? kBlockN_
                                 : kHeadDim <= 64  ? 192
                                 : kHeadDim <= 128 ? 128
                                 : kHeadDim <= 192 ? 96
                                                   : 80;
  static constexpr int kStages = kStages_ ? kStages_ : kHeadDim <= 64 ? 3 : 2;
  static constexpr int kColBlock = 64;                     // columns of one 128-byte swizzle atom row
  static constexpr int kColBlocks = kHeadDim / kColBlock;  // TMA boxes per tile
  static constexpr int kSTiles = kBlockN / kMmaN;          // 8-key n-tiles of S per thread
  static constexpr int kOTiles = kHeadDim / kMmaN;         // 8-column n-tiles of O per thread
  static constexpr int kQKSteps = kHeadDim / kMmaK;        // k-steps of S = Q K^T
  static constexpr int kPVSteps = kBlockN / kMmaK;         // k-steps of O += P V
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;  // one K or one V stage
  static constexpr int kBarrierBytes = 256;
  static constexpr int kSmemBytes =
      kQBytes + 2 * kStages * kKVBytes + kBarrierBytes + 1024;  // + alignment slack
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;

  static_assert(kHeadDim % kColBlock == 0, "tiles are whole 64-column swizzle atoms (128-byte rows)");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256,
                "key tiles are whole k-steps of P V and one TMA box tall");
  static_assert((kBlockN * 128) % 1024 == 0, "every stage starts on a 1024-byte swizzle boundary");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit in shared memory");
  static_assert(kProducerRegs * kWgThreads + kConsumerRegs * kConsumers * kWgThreads <= 64 * 1024,
                "the warpgroups' register budgets must fit the register file");
  static_assert(kHeadDim / 2 + kBlockN / 2 + kBlockN / 4 <= 200,
                "O and S accumulators and the packed P must fit a consumer's registers");
};

template <int kHeadDim_>
struct BwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * kWarpSize;
  // One CTA owns kBlockN keys of one kv head; each warp owns 16 of them and keeps their dK, dV
  // (16 x head_dim fp32 each) in registers for the whole loop over query tiles. Working on the
  // transposed scores S^T = K Q^T makes P^T and dS^T the A operands of dV += P^T dO and
  // dK += dS^T Q straight from registers.
  static constexpr int kKeysPerWarp = kMmaM;
  static constexpr int kBlockN = kKeysPerWarp * kWarps;  // key rows per CTA
  static constexpr int kBlockM = 64;                     // query rows per step
  static constexpr int kPitch = padded_pitch(kHeadDim);
  static constexpr int kPitchDs = padded_pitch(kBlockM);  // dS^T tile (kBlockN x kBlockM)
  // The query tile is processed in chunks of kQChunk queries: S^T and dP^T of one chunk (2 x 16 x
  // kQChunk fp32) beside dK and dV fit in 255 registers without spilling.
  static constexpr int kQChunk = 32;
  static constexpr int kQTiles = kQChunk / kMmaN;   // n-tiles of S^T per warp and chunk
  static constexpr int kMSteps = kQChunk / kMmaK;   // k-steps of P^T dO per chunk
  static constexpr int kDTiles = kHeadDim / kMmaN;  // n-tiles of dK/dV per warp
  static constexpr int kDSteps = kHeadDim / kMmaK;
  static constexpr int kStages = 2;  // Q/dO/lse/dsum double buffer: the next step's loads overlap this one
  // dQ (kBlockM x head_dim) = dS K: warps tile it kDqWarpsM x kDqWarpsD.
  static constexpr int kDqWarpsD = kHeadDim % 64 == 0 ? 4 : 2;  // whole 16-column pairs each
  static constexpr int kDqWarpsM = kWarps / kDqWarpsD;
  static constexpr int kDqRows = kBlockM / kDqWarpsM;
  static constexpr int kDqMTiles = kDqRows / kMmaM;
  static constexpr int kDqCols = kHeadDim / kDqWarpsD;
  static constexpr int kDqTiles = kDqCols / kMmaN;
  static constexpr int kSmemTile16 = (2 * kBlockN + 2 * kStages * kBlockM) * kPitch + kBlockN * kPitchDs;
  static constexpr int kSmemBytes = kSmemTile16 * 2 + 2 * kStages * kBlockM * 4;  // + lse, dsum rows

  static_assert(kHeadDim % 32 == 0 && kHeadDim <= 128,
                "dK and dV (2 x 16 x head_dim fp32 per warp) must fit in registers: head_dim <= 128");
  static_assert(kDqWarpsM * kDqWarpsD == kWarps && kDqRows % kMmaM == 0 && kDqCols % 16 == 0,
                "the dQ tiling must cover kBlockM x head_dim with whole ldmatrix.x4 tiles");
  static_assert(kBlockM <= kThreads, "one thread stages each row's lse and dsum");
  static_assert(kBlockM % kQChunk == 0 && kQChunk % 16 == 0, "chunks are whole pairs of 8-query n-tiles");
  static_assert((kBlockM * kHeadDim / kChunkElems) % kThreads == 0 &&
                    (kBlockN * kHeadDim / kChunkElems) % kThreads == 0,
                "every thread issues the same number of 16-byte copies per tile");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit in shared memory");
};

// The FlashAttention-2 style backward on warpgroup MMAs (bwd/mainloop_fa2_wgmma.cuh, sm_90a):
// two warpgroups of 64 keys each, 64-row query steps, Q/dO/lse/dsum double buffered.
struct BwdWgTraits {
  static constexpr int kHeadDim = 128;
  static constexpr int kThreads = 256;
  static constexpr int kBlockN = 128;                // keys per CTA: two warpgroups of 64
  static constexpr int kBlockM = 64;                 // query rows per step
  static constexpr int kStages = 2;                  // Q/dO/lse/dsum double buffer
  static constexpr int kTileN = kBlockN * kHeadDim;  // 16-bit elements of the K (V) tile
  static constexpr int kTileM = kBlockM * kHeadDim;  // 16-bit elements of one Q (dO) stage
  static constexpr int kTileDs = kBlockN * kBlockM;  // 16-bit elements of one dS^T buffer
  static constexpr int kSmem16 = 2 * kTileN + 2 * kStages * kTileM + 2 * kTileDs;
  static constexpr int kSmemBytes =
      kSmem16 * 2 + 2 * kStages * kBlockM * 4 + 1024;  // + lse/dsum, + alignment slack
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit in shared memory");
};

// The Hopper backward (native/cuda/bwd/, sm_90a), head_dim 64 and 128: one CTA per key tile of
// kBlockN keys, three warpgroups. A producer warp loads K and V once and then Q, dO, lse and dsum
// of each query tile into kStages stages (TMA, mbarriers); dQ warps of that warpgroup add each
// step's dQ tiles from shared memory onto dq with bulk reductions; two consumer warpgroups own 64
// keys each and keep their dK, dV in registers. dS^T goes through shared memory for dQ = dS K:
// at head_dim 128 each consumer computes its half of dQ's columns from both consumers' dS^T (one
// barrier between them per step, dS^T in two alternating buffers); at head_dim 64 (kOwnDq) each
// computes every column from its own keys into its own tile, so the consumers never wait for each
// other and dq receives two reductions per step (measured slower at head_dim 128, where it must
// also wait for dV and dK to free registers: benchmark/RESULTS.md). dQ tiles are padded per row
// (kDqPitch) so that the consumers' fragment stores do not conflict on banks.
//
// head_dim 192 and 256 (kWide, bwd/mainloop_wgmma_wide.cuh): dK and dV of 64 keys would take
// up to 256 registers a thread, so both consumers work on the same 64 keys and split the columns
// instead: consumer 0 keeps dK, dV and computes dQ for columns 0..127, consumer 1 for the rest
// (64 at head_dim 192: the operands' column blocks are 64 wide). S^T and dP^T are split by
// queries (32 each), and P^T and dS^T go through shared memory (buffers 0 and 1) for the MMAs that
// read every query. Each consumer's dQ columns have their own tile and dQ warp. At head_dim 256 a
// Q or dO stage takes 32 KB, so there is one.
template <int kHeadDim_>
struct BwdHopperTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr bool kOwnDq = kHeadDim == 64;
  static constexpr bool kWide = kHeadDim > 128;
  static constexpr int kWgThreads = 4 * kWarpSize;
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = (kConsumers + 1) * kWgThreads;
  static constexpr int kBlockN = kWide ? 64 : 64 * kConsumers;  // keys per CTA
  static constexpr int kBlockM = 64;                            // query rows per step
  static constexpr int kStages = kHeadDim == 256 ? 1 : 2;
  static constexpr int kColBlocks = kHeadDim / 64;  // 128-byte swizzle atoms (TMA boxes) per row
  static constexpr int kKSteps = kHeadDim / 16;     // k-steps of S^T = K Q^T and dP^T = V dO^T
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;  // one Q (dO) stage
  static constexpr int kDsBytes = kBlockN * kBlockM * 2;  // one dS^T (kWide: or P^T) buffer
  static constexpr int kDsBuffers = kOwnDq ? 1 : 2;
  static constexpr int kDqTiles = kOwnDq || kWide ? kConsumers : 1;
  static constexpr int kDqCols = kOwnDq ? kHeadDim : kHeadDim / kConsumers;  // per consumer (not kWide)
  // dQ tile `tile`: its columns (kWide: consumer `tile`'s, from column 128 tile; else every column)
  // and its bytes per row, padded so that the consumers' fragment stores do not conflict on banks.
  static constexpr int dq_tile_cols(int tile) {
    return kWide ? (tile == 0 ? 128 : kHeadDim - 128) : kHeadDim;
  }
  static constexpr int dq_tile_col0(int tile) { return kWide ? 128 * tile : 0; }
  static constexpr int dq_pitch(int tile) { return dq_tile_cols(tile) * 4 + 32; }
  static constexpr int kDqPitch = dq_pitch(0);
  static constexpr int kDqTileBytes = kBlockM * kDqPitch;
  static constexpr int dq_tile_offset(int tile) {
    return kWide ? (tile ? kDqTileBytes : 0) : tile * kDqTileBytes;
  }
  static constexpr int kOffV = kKVBytes, kOffQ = 2 * kKVBytes, kOffDout = kOffQ + kStages * kQBytes;
  static constexpr int kOffDs = kOffDout + kStages * kQBytes, kOffDq = kOffDs + kDsBuffers * kDsBytes;
  static constexpr int kOffLse = kOffDq + dq_tile_offset(kDqTiles - 1) + kBlockM * dq_pitch(kDqTiles - 1);
  static constexpr int kOffDsum = kOffLse + kStages * kBlockM * 4;
  static constexpr int kOffBars = kOffDsum + kStages * kBlockM * 4;
  static constexpr int kSmemBytes = kOffBars + 256 + 1024;  // + barriers, + alignment slack
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;

  static_assert(kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 192 || kHeadDim == 256,
                "head_dim 64 or 128 (dK and dV of 64 keys in registers), 192 or 256 (split columns)");
  static_assert(kOffQ % 1024 == 0 && kOffDout % 1024 == 0 && kOffDs % 1024 == 0 && kQBytes % 1024 == 0,
                "every swizzled tile starts on a 1024-byte boundary");
  static_assert(kDqPitch % 16 == 0 && kOffDq % 16 == 0, "bulk copies read 16-byte aligned rows");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit in shared memory");
  static_assert(kProducerRegs * kWgThreads + kConsumerRegs * kConsumers * kWgThreads <= 64 * 1024,
                "the warpgroups' register budgets must fit the register file");
};

// The rows one CTA's (batch entry or varlen segment) attention covers: batch entry b, query rows
// [q0, q0 + nq) and key rows [k0, k0 + nk). Causal alignment is bottom-right within the span.
struct Span {
  int64_t b;
  int q0, nq, k0, nk;
};

// Element (batch b, row, head) of a (batch, seqlen, heads, head_dim) 16-bit input view.
template <typename T>
__device__ __forceinline__ const T* bsh_ptr(const void* base, const BshStrides& s, int64_t b, int64_t row,
                                            int64_t head) {
  return static_cast<const T*>(base) + b * s.batch + row * s.row + head * s.head;
}

__device__ __forceinline__ Span span_of(const AttnShape& sh, const Segments& seg, int z) {
  if (seg.num_seqs == 0) return Span{z, 0, sh.seqlen_q, 0, sh.seqlen_k};
  return Span{0, seg.q_start[z], seg.q_len[z], seg.k_start[z], seg.k_len[z]};
}

}  // namespace rfa::cuda

// ---- Host-side checks shared by flash_fwd and flash_bwd (what the kernels above require) ----
namespace rfa::cuda {

inline bool head_dim_supported(int d) { return d == 32 || d == 64 || d == 96 || d == 128; }

// What the launchers plan with about the calling thread's current device: SM count (grid
// splits) and whether it runs sm_90a code (the wgmma kernels). Read once per device; worker
// threads of different ranks call concurrently. RFA_KERNELS=mma makes a Hopper GPU take the
// mma.sync kernels every other GPU runs, so one machine tests both paths.
struct DeviceFacts {
  int sms = 0;
  bool sm90 = false;
};

inline DeviceFacts read_device_facts(int dev) {
  DeviceFacts f;
  int major = 0, minor = 0;
  RFA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  RFA_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  RFA_CUDA_CHECK(cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, dev));
  const char* kernels = std::getenv("RFA_KERNELS");
  f.sm90 = major == 9 && minor == 0 && !(kernels && std::string(kernels) == "mma");
  return f;
}

inline DeviceFacts current_device() {
  static std::mutex mu;
  static std::array<DeviceFacts, 64> cache{};
  int dev = 0;
  RFA_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= int(cache.size())) return read_device_facts(dev);
  std::lock_guard<std::mutex> lock(mu);
  if (cache[dev].sms == 0) cache[dev] = read_device_facts(dev);
  return cache[dev];
}

// Shape, dtype, head_dim and segments; `fn` names the entry point in messages.
// `wide`: head_dim 192 and 256 too (the Hopper forward's, dense batches on sm_90 only).
inline void check_attn(const char* fn, const AttnShape& sh, DType dtype, const Segments& seg,
                       bool wide = false) {
  const std::string f(fn);
  RFA_CHECK_ARG(sh.batch >= 0 && sh.seqlen_q >= 0 && sh.seqlen_k >= 0, f + ": negative dimension");
  RFA_CHECK_ARG(sh.nheads > 0 && sh.nheads_k > 0 && sh.nheads % sh.nheads_k == 0,
                f + ": nheads (" + std::to_string(sh.nheads) + ") must be a positive multiple of nheads_k (" +
                    std::to_string(sh.nheads_k) + ")");
  if (!head_dim_supported(sh.head_dim) && !(wide && (sh.head_dim == 192 || sh.head_dim == 256)))
    RFA_THROW("E_UNSUPPORTED", f + ": head_dim " + std::to_string(sh.head_dim) +
                                   " is not supported by the cuda kernels (32, 64, 96, 128" +
                                   (wide ? ", and 192, 256 for dense batches on Hopper)" : ")"));
  if (dtype != DType::bf16 && dtype != DType::f16)
    RFA_THROW("E_UNSUPPORTED",
              f + ": float32 q/k/v are not supported by the cuda kernels (bfloat16, float16)");
  // The running max is taken over raw scores and -inf masks are scaled: that needs scale > 0.
  RFA_CHECK_ARG(sh.softmax_scale > 0.f && sh.softmax_scale < 3.0e38f,
                f + ": softmax_scale must be positive and finite, got " + std::to_string(sh.softmax_scale));
  if (seg.num_seqs == 0) return;
  RFA_CHECK_ARG(sh.batch == 1, f + ": varlen segments need batch 1");
  RFA_CHECK_ARG(seg.q_start && seg.q_len && seg.k_start && seg.k_len, f + ": varlen: null segment array");
  RFA_CHECK_ARG(seg.max_seqlen_q >= 0 && seg.max_seqlen_q <= sh.seqlen_q && seg.max_seqlen_k >= 0 &&
                    seg.max_seqlen_k <= sh.seqlen_k,
                f + ": varlen: max_seqlen_q/k must lie in [0, seqlen_q/k]");
}

// The score hooks' arguments (the bindings check their types; this, what a kernel relies on).
inline void check_mods(const char* fn, const ScoreMods& m, const Segments& seg) {
  const std::string f(fn);
  RFA_CHECK_ARG((m.q_pos == nullptr) == (m.k_pos == nullptr), f + ": positions need both q_pos and k_pos");
  RFA_CHECK_ARG(m.softcap >= 0.f && m.softcap < 3.0e38f, f + ": softcap must be >= 0 and finite");
  RFA_CHECK_ARG(m.dropout_p >= 0.f && m.dropout_p < 1.f, f + ": dropout_p must lie in [0, 1)");
  RFA_CHECK_ARG(!(m.positional() && seg.num_seqs > 0 && m.dropout_p > 0.f) || m.seq_tok,
                f + ": varlen dropout with positions needs seq_tok");
}

// A 16-bit (b, s, h, d) view read with 16-byte cp.async: base and strides must be 16-byte aligned.
inline void check_view16(const char* fn, const char* name, const void* ptr, const BshStrides& st) {
  const bool aligned = reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && st.batch % kChunkElems == 0 &&
                       st.row % kChunkElems == 0 && st.head % kChunkElems == 0;
  if (!aligned)
    RFA_THROW(
        "E_UNSUPPORTED",
        std::string(fn) + ": " + name +
            " must be 16-byte aligned (base address and batch/row/head strides multiples of 8 elements)");
}

}  // namespace rfa::cuda
