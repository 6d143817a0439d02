// The Hopper backward's roles (BwdHopperTraits, sm_90a): the producer warp's loads, the dQ warps'
// bulk reductions, and a consumer warpgroup's wgmma pipeline over its key tile's query steps.
//
// Per step (query head h, query tile of 64 rows) a consumer warpgroup, for its 64 keys:
//   S^T = K Q^T and dP^T = V dO^T (both operands from shared memory), issued back to back;
//   P^T = exp2(S^T scale_log2 - lse_log2) under dP^T; dS^T = P^T (dP^T - dsum);
//   dV += P^T dO and dK += dS^T Q (A from registers) while dS^T is stored to shared memory;
//   once the dS^T that its dQ reads is there (named barrier), dQ = dS K (BwdHopperTraits::kOwnDq:
//   every column from its own keys, else its half of the columns from both consumers' keys),
//   stored to a shared dQ tile. (Left in flight into the next step, under its S^T, the dQ
//   accumulators cross the loop's back edge, and ptxas then serialises every wgmma: C7514.)
// A dQ warp per tile adds it onto dq (fp32) with one bulk reduction per row, so no CTA serialises
// on atomics; a tile is handed over through two named barriers (full, empty).
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/bwd/fragments.cuh"
#include "cuda/bwd/work.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/hopper_sync.cuh"

namespace rfa::cuda {

template <class Tr>
struct BwdHopperBarriers {
  uint64_t kv_full;
  // Q with its lse rows, dO with its dsum rows: the lane that issues the copies announces their
  // bytes, and every lane of the producer warp arrives once its stats rows are stored.
  uint64_t q_full[Tr::kStages], do_full[Tr::kStages];
  uint64_t stage_empty[Tr::kStages];  // every consumer warp, once dV and dK have read it
  static constexpr int kStatArrivals = 1 + kWarpSize;
  static constexpr int kConsumerWarps = Tr::kConsumers * 4;
  __device__ __forceinline__ void init() {
    mbar_init(&kv_full, 1);
    for (int i = 0; i < Tr::kStages; ++i) {
      mbar_init(&q_full[i], kStatArrivals), mbar_init(&do_full[i], kStatArrivals);
      mbar_init(&stage_empty[i], kConsumerWarps);
    }
  }
};

// Varlen spans only: a tile's rows past its span hold the next segment's rows or gaps, which may
// hold NaN (P = 0 does not cancel NaN in the MMAs). The producer warp zeroes them once their copy
// has landed and then arrives here; the consumers wait on these after the full barriers.
template <class Tr>
struct BwdTailBarriers {
  uint64_t kv_ready, q_ready[Tr::kStages], do_ready[Tr::kStages];
  __device__ __forceinline__ void init() {
    mbar_init(&kv_ready, 1);
    for (int i = 0; i < Tr::kStages; ++i) mbar_init(&q_ready[i], 1), mbar_init(&do_ready[i], 1);
  }
};

// Named barriers (0 is __syncthreads): the dS^T that a consumer's dQ reads is stored (both
// consumers', or with kOwnDq its own; kWide: P^T and dS^T of both); kWide only: both consumers
// have read the previous step's P^T and dS^T (ds_free); dQ tile `tile` written by its consumers
// (full) and read by its dQ warp's reductions (empty).
template <class Tr>
struct BwdNamedBarriers {
  static constexpr bool kTilePerConsumer = Tr::kDqTiles == Tr::kConsumers;
  static constexpr int kDsThreads = Tr::kOwnDq ? Tr::kWgThreads : Tr::kConsumers * Tr::kWgThreads;
  static constexpr int kDqThreads = Tr::kConsumers * Tr::kWgThreads / Tr::kDqTiles + kWarpSize;
  static __device__ __forceinline__ int ds_ready(int wg) { return Tr::kOwnDq ? 1 + wg : 1; }
  static constexpr int kDsFree = 2;
  // The deterministic mode with two dQ tiles a step (kOwnDq): tile 0's reductions are done, tile
  // 1's may go.
  static constexpr int kDqOrder = 7, kDqOrderThreads = 2 * kWarpSize;
  static __device__ __forceinline__ int dq_full(int tile) { return kTilePerConsumer ? 3 + tile : 2; }
  static __device__ __forceinline__ int dq_empty(int tile) { return kTilePerConsumer ? 5 + tile : 3; }
};

template <class Tr>
struct BwdHopperSmem {
  unsigned char* base;  // 1024-byte aligned
  __device__ __forceinline__ unsigned char* k() const { return base; }
  __device__ __forceinline__ unsigned char* v() const { return base + Tr::kOffV; }
  __device__ __forceinline__ unsigned char* q(int stage) const {
    return base + Tr::kOffQ + stage * Tr::kQBytes;
  }
  __device__ __forceinline__ unsigned char* dout(int stage) const {
    return base + Tr::kOffDout + stage * Tr::kQBytes;
  }
  __device__ __forceinline__ unsigned char* ds(int buf) const {
    return base + Tr::kOffDs + buf * Tr::kDsBytes;
  }
  __device__ __forceinline__ unsigned char* dq(int tile) const {
    return base + Tr::kOffDq + Tr::dq_tile_offset(tile);
  }
  __device__ __forceinline__ float* lse(int stage) const {
    return reinterpret_cast<float*>(base + Tr::kOffLse) + stage * Tr::kBlockM;
  }
  __device__ __forceinline__ float* dsum(int stage) const {
    return reinterpret_cast<float*>(base + Tr::kOffDsum) + stage * Tr::kBlockM;
  }
  __device__ __forceinline__ BwdHopperBarriers<Tr>& bars() const {
    return *reinterpret_cast<BwdHopperBarriers<Tr>*>(base + Tr::kOffBars);
  }
  static constexpr int kTailsOffset = 128;  // within the 256 barrier bytes
  static_assert(sizeof(BwdHopperBarriers<Tr>) <= kTailsOffset && sizeof(BwdTailBarriers<Tr>) <= 128,
                "both barrier sets fit the traits' 256 bytes");
  __device__ __forceinline__ BwdTailBarriers<Tr>& tails() const {
    return *reinterpret_cast<BwdTailBarriers<Tr>*>(base + Tr::kOffBars + kTailsOffset);
  }
};

// The step after (h, mt) in step_at<kDet>'s walk. Default: query tiles ascending within a head,
// then the next head; kDet: every query head of the group, then the query tile below.
template <bool kDet>
__device__ __forceinline__ void next_step(const BwdWork& w, int& h, int& mt) {
  if constexpr (kDet) {
    if (++h == w.hk * w.group + w.group) h = w.hk * w.group, --mt;
  } else {
    if (++mt == w.m_begin + w.m_tiles) mt = w.m_begin, ++h;
  }
}

// The producer warp: K and V once, then per step Q and dO by TMA (lane 0) and their lse and dsum
// rows by every lane (lse as lse * log2(e), +inf for rows without keys or past the span, so that
// their probabilities are 0). kVarlen: spans are varlen segments, and the rows of a tile past its
// span are zeroed (BwdTailBarriers). kDet: the deterministic mode's walk (step_at<true>).
template <class Tr, bool kVarlen, bool kDet>
__device__ __forceinline__ void bwd_produce(const FlashBwdParams& p, const BwdWork& w,
                                            const BwdHopperSmem<Tr>& sm, const CUtensorMap* map_q,
                                            const CUtensorMap* map_k, const CUtensorMap* map_v,
                                            const CUtensorMap* map_do) {
  if (w.steps == 0) return;
  BwdHopperBarriers<Tr>& bars = sm.bars();
  const Span& sp = w.sp;
  const int lane = threadIdx.x % kWarpSize, b = int(sp.b);
  if (lane == 0) {
    mbar_arrive_expect_tx(&bars.kv_full, 2 * Tr::kKVBytes);
#pragma unroll
    for (int cb = 0; cb < Tr::kColBlocks; ++cb) {
      tma_load_4d(sm.k() + cb * Tr::kBlockN * 128, map_k, &bars.kv_full, cb * 64, sp.k0 + w.n0, w.hk, b);
      tma_load_4d(sm.v() + cb * Tr::kBlockN * 128, map_v, &bars.kv_full, cb * 64, sp.k0 + w.n0, w.hk, b);
    }
  }
  if constexpr (kVarlen) {
    if (w.keys_valid < Tr::kBlockN) {
      mbar_wait(&bars.kv_full, 0);
      zero_tile_rows<Tr::kColBlocks>(sm.k(), Tr::kBlockN, w.keys_valid, lane, kWarpSize);
      zero_tile_rows<Tr::kColBlocks>(sm.v(), Tr::kBlockN, w.keys_valid, lane, kWarpSize);
      fence_proxy_async();  // st.shared -> the consumers' wgmma (async proxy) reads
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&sm.tails().kv_ready);
  }
  // One stats row per lane and pass: `src` at query row (span row) q of head h.
  auto stage_stats = [&](float* dst, const float* src, const BhsStrides& st, int h, int m0, bool is_lse) {
#pragma unroll
    for (int r = lane; r < Tr::kBlockM; r += kWarpSize) {
      float x = is_lse ? INFINITY : 0.f;
      if (m0 + r < sp.nq) {
        x = src[sp.b * st.batch + h * st.head + int64_t(sp.q0 + m0 + r) * st.row];
        if (is_lse) x = lse_log2(x);
      }
      dst[r] = x;
    }
  };
  int h, mt;
  step_at<kDet>(w, w.step0, h, mt);
  for (int st = 0; st < w.steps; ++st, next_step<kDet>(w, h, mt)) {
    const int stage = st % Tr::kStages, m0 = mt * Tr::kBlockM;
    mbar_wait(&bars.stage_empty[stage], ((st / Tr::kStages) & 1) ^ 1);
    if (lane == 0) {
      mbar_arrive_expect_tx(&bars.q_full[stage], Tr::kQBytes);
      mbar_arrive_expect_tx(&bars.do_full[stage], Tr::kQBytes);
#pragma unroll
      for (int cb = 0; cb < Tr::kColBlocks; ++cb) {
        tma_load_4d(sm.q(stage) + cb * Tr::kBlockM * 128, map_q, &bars.q_full[stage], cb * 64, sp.q0 + m0, h,
                    b);
        tma_load_4d(sm.dout(stage) + cb * Tr::kBlockM * 128, map_do, &bars.do_full[stage], cb * 64,
                    sp.q0 + m0, h, b);
      }
    }
    stage_stats(sm.lse(stage), p.lse, p.lse_stride, h, m0, true);
    mbar_arrive(&bars.q_full[stage]);
    stage_stats(sm.dsum(stage), p.dsum, p.dsum_stride, h, m0, false);
    mbar_arrive(&bars.do_full[stage]);
    if constexpr (kVarlen) {
      const int rows = min(Tr::kBlockM, sp.nq - m0);
      if (rows < Tr::kBlockM) {
        const uint32_t parity = (st / Tr::kStages) & 1;
        mbar_wait(&bars.q_full[stage], parity);
        zero_tile_rows<Tr::kColBlocks>(sm.q(stage), Tr::kBlockM, rows, lane, kWarpSize);
        mbar_wait(&bars.do_full[stage], parity);
        zero_tile_rows<Tr::kColBlocks>(sm.dout(stage), Tr::kBlockM, rows, lane, kWarpSize);
        fence_proxy_async();
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(&sm.tails().q_ready[stage]), mbar_arrive(&sm.tails().do_ready[stage]);
    }
  }
}

// The dQ warp of tile `tile`: per step, once its consumers have written the tile, one bulk
// reduction per valid row onto dq (already scaled; kWide: onto its columns), then the tile
// is handed back once the reductions have read it. kDet: the reductions go in this key tile's turn
// (BwdGrid::dq_turns), which passes on once they are done; with two tiles a step (kOwnDq) tile 0's
// warp takes the turn and tile 1's adds after it (named barrier kDqOrder) and passes it on.
template <class Tr, bool kDet>
__device__ __forceinline__ void bwd_write_dq(const FlashBwdParams& p, const BwdGrid& grid, const BwdWork& w,
                                             const BwdHopperSmem<Tr>& sm, int tile) {
  static_assert(!kDet || !Tr::kWide,
                "kWide's two dQ tiles hold different columns: no order needed, none built");
  constexpr bool kTwo = Tr::kDqTiles == 2;
  using Nb = BwdNamedBarriers<Tr>;
  if (w.steps == 0) return;
  const Span& sp = w.sp;
  const int lane = threadIdx.x % kWarpSize;
  named_arrive(Nb::dq_empty(tile), Nb::kDqThreads);  // the tile starts free
  const int mine = w.n0 / Tr::kBlockN;               // kDet: this key tile's turn
  int h, mt;
  step_at<kDet>(w, w.step0, h, mt);
  for (int st = 0; st < w.steps; ++st, next_step<kDet>(w, h, mt)) {
    named_sync(Nb::dq_full(tile), Nb::kDqThreads);
    int* turn = nullptr;
    if constexpr (kDet) {
      turn = dq_turn(p, grid, w, h, mt);
      if (!kTwo || tile == 0) {
        wait_turn_warp(turn, mine);
      } else {
        named_sync(Nb::kDqOrder, Nb::kDqOrderThreads);  // tile 0's additions are done
        fence_proxy_async_global();
      }
    }
    float* gdq = p.dq + sp.b * p.dq_stride.batch + h * p.dq_stride.head + Tr::dq_tile_col0(tile);
#pragma unroll
    for (int r = lane; r < Tr::kBlockM; r += kWarpSize) {
      const int q = mt * Tr::kBlockM + r;
      if (q < sp.nq)
        bulk_reduce_add_f32(gdq + int64_t(sp.q0 + q) * p.dq_stride.row, sm.dq(tile) + r * Tr::dq_pitch(tile),
                            Tr::dq_tile_cols(tile) * 4);
    }
    bulk_commit();
    if constexpr (kDet) {
      bulk_wait<0>();  // the additions are done: the turn (or tile 1) may go
      if (!kTwo || tile == 1) {
        pass_turn_warp(turn, mine + 1);
      } else {
        fence_proxy_async_global();
        // Both warps sync (not arrive and sync): a second arrival of tile 0 before tile 1 came
        // would complete the barrier without it.
        named_sync(Nb::kDqOrder, Nb::kDqOrderThreads);
      }
    } else {
      bulk_wait_read<0>();
      __syncwarp();
    }
    if (st + 1 < w.steps) named_arrive(Nb::dq_empty(tile), Nb::kDqThreads);
  }
  bulk_wait<0>();
}

// The end of a consumer's step, its MMAs committed as two groups (dV and dK, then dQ): once dV and
// dK have read the stage, every warp hands it back to the producer; once dQ is done, `store_dq`.
template <int kDkv, int kDq, class StoreDq>
__device__ __forceinline__ void end_step(float (&acc_dv)[kDkv], float (&acc_dk)[kDkv], float (&dq)[kDq],
                                         uint64_t* stage_empty, int lane, StoreDq& store_dq) {
  wgmma_wait<1>();
  fence_regs(acc_dv);
  fence_regs(acc_dk);
  __syncwarp();
  if (lane == 0) mbar_arrive(stage_empty);
  wgmma_wait<0>();
  fence_regs(dq);
  store_dq();
}

// A consumer warpgroup (wg 0 or 1: keys 64 wg .. 64 wg + 63 of the tile); warp `cwarp` (0..7 over
// both) owns keys 16 cwarp + g and + 8, as in the FlashAttention-2 style kernels, so the masks and
// the dK/dV epilogue (write_dkv) are theirs. kDet: the deterministic mode's walk; the turns are
// the dQ warp's.
template <class Tr, typename T, bool kCausal, bool kVarlen, bool kDet>
__device__ __forceinline__ void bwd_consume(const FlashBwdParams& p, const BwdGrid& grid, const BwdWork& w,
                                            const BwdHopperSmem<Tr>& sm, int cwarp) {
  using Mma = MmaType<T>;
  using Nb = BwdNamedBarriers<Tr>;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN, kD = Tr::kHeadDim;
  constexpr bool kOwn = Tr::kOwnDq;
  BwdHopperBarriers<Tr>& bars = sm.bars();
  const Span& sp = w.sp;
  const int lane = threadIdx.x % kWarpSize;
  // The warpgroup index as lane 0's value: warp-uniform to the compiler, so the descriptor
  // arithmetic stays in uniform registers.
  const int wg = __shfl_sync(0xffffffffu, cwarp / 4, 0), wq = cwarp % 4;
  const int g = lane / 4, t = lane % 4;
  const int key_lo = w.n0 + cwarp * 16 + g;  // this lane's keys: key_lo and key_lo + 8
  const int dq_tile = kOwn ? wg : 0;

  // Matrix descriptors; a k-step adds a constant (bytes >> 4) to the start address field.
  // K-major (S^T, dP^T): k-step kk moves 32 bytes within a 128-byte row, to the second column
  // block after four. MN-major (dV, dK, dQ): a k-step is 16 rows = 2048 bytes, LBO the distance
  // between column blocks.
  const uint32_t smem0 = smem_u32(sm.base);
  const uint64_t dK = gmma_desc(smem0 + wg * 64 * 128, 16);              // rows 64 wg.. of K
  const uint64_t dV = gmma_desc(smem0 + Tr::kOffV + wg * 64 * 128, 16);  // rows 64 wg.. of V
  const uint64_t dQk = gmma_desc(smem0 + Tr::kOffQ, 16);
  const uint64_t ddOk = gmma_desc(smem0 + Tr::kOffDout, 16);
  const uint64_t dQm = gmma_desc(smem0 + Tr::kOffQ, kBM * 128);
  const uint64_t ddOm = gmma_desc(smem0 + Tr::kOffDout, kBM * 128);
  const uint64_t ddS = gmma_desc(smem0 + Tr::kOffDs, 16);
  // dQ's B: kOwn, rows 64 wg.. of K (every column); else column block wg of K (every row).
  const uint64_t dKq =
      kOwn ? gmma_desc(smem0 + wg * 64 * 128, kBN * 128) : gmma_desc(smem0 + wg * kBN * 128, 16);
  constexpr uint32_t kStageStep = Tr::kQBytes / 16, kDsStep = Tr::kDsBytes / 16;
  auto koff = [](int kk, int rows) { return uint32_t(((kk / 4) * rows * 128 + (kk % 4) * 32) >> 4); };

  float acc_dk[kD / 2], acc_dv[kD / 2];
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) acc_dk[i] = acc_dv[i] = 0.f;

  // dQ of a step (Tr::kDqCols columns from c0: 0 with kOwn, else 64 wg): rows 16 wq + g (+ 8),
  // columns c0 + 8i + 2t (+ 1), scaled, into its tile once the dQ warp has read the previous one.
  float dq[Tr::kDqCols / 2];
  auto store_dq = [&] {
    const float scale = p.shape.softmax_scale;
    named_sync(Nb::dq_empty(dq_tile), Nb::kDqThreads);
    store_dq_rows<Tr::kDqCols>(sm.dq(dq_tile), Tr::kDqPitch, wq * 16, kOwn ? 0 : wg * Tr::kDqCols, g, t, dq,
                               scale);
    fence_proxy_async();  // st.shared -> the bulk reductions' (async proxy) reads
    named_arrive(Nb::dq_full(dq_tile), Nb::kDqThreads);
  };

  if (w.steps > 0) {
    mbar_wait(&bars.kv_full, 0);
    if constexpr (kVarlen) mbar_wait(&sm.tails().kv_ready, 0);
  }
  int h, mt;
  step_at<kDet>(w, w.step0, h, mt);
  for (int st = 0; st < w.steps; ++st, next_step<kDet>(w, h, mt)) {
    const int stage = st % Tr::kStages, buf = st % Tr::kDsBuffers;
    const uint32_t parity = (st / Tr::kStages) & 1;
    const int m0 = mt * kBM;

    // S^T = K Q^T and dP^T = V dO^T (64 keys x 64 queries per warpgroup).
    float s[32], dp[32];
    mbar_wait(&bars.q_full[stage], parity);
    if constexpr (kVarlen) mbar_wait(&sm.tails().q_ready[stage], parity);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < Tr::kKSteps; ++kk)
      wgmma_ss<T, 64, 0, 0>(s, dK + koff(kk, kBN), dQk + stage * kStageStep + koff(kk, kBM), kk);
    wgmma_commit();
    mbar_wait(&bars.do_full[stage], parity);
    if constexpr (kVarlen) mbar_wait(&sm.tails().do_ready[stage], parity);
    wgmma_fence();  // dp was last read by the previous step's dS^T
#pragma unroll
    for (int kk = 0; kk < Tr::kKSteps; ++kk)
      wgmma_ss<T, 64, 0, 0>(dp, dV + koff(kk, kBN), ddOk + stage * kStageStep + koff(kk, kBM), kk);
    wgmma_commit();
    wgmma_wait<1>();
    fence_regs(s);

    // P^T, masked: exponentials first, then the mask in a CTA-uniform branch that only the tiles
    // crossing the diagonal or the keys' end take.
    const float* lse = sm.lse(stage);
    const float* dsum = sm.dsum(stage);
    const bool needs_mask = w.n0 + kBN > sp.nk || (kCausal && w.n0 + kBN - 1 > m0 + w.diag);
    exp2_scores<8>(s, lse, grid.scale_log2, t);
    if (needs_mask) mask_scores<8, kCausal>(s, m0, key_lo, t, sp.nk, w.diag);
    wgmma_wait<0>();
    fence_regs(dp);
    // dS^T = P^T (dP^T - dsum); both become 16-bit A fragments.
    uint32_t pa[4][4], da[4][4];
    pack_pt_dst<Mma>(s, dp, dsum, t, pa, da);

    // dV += P^T dO and dK += dS^T Q (the softmax scale is applied in the epilogue).
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<T, kD, 1>(acc_dv, pa[kk], ddOm + stage * kStageStep + kk * 128, 1);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_rs<T, kD, 1>(acc_dk, da[kk], dQm + stage * kStageStep + kk * 128, 1);
    wgmma_commit();

    // dS^T -> shared memory. Its rows were last read by the dQ of step st - kDsBuffers, which every warpgroup
    // that reads them waited for before the barrier of step st - 1 (kOwn: before these stores).
    store_dst_tile(sm.ds(buf), da, cwarp * 16, g, t);
    fence_proxy_async();
    named_sync(Nb::ds_ready(wg), Nb::kDsThreads);

    // dQ = dS K: A = dS (queries x keys) read from dS^T, B = K, both MN-major; over every key of
    // the tile, or (kOwn) over this warpgroup's 64.
    wgmma_fence();
    if constexpr (kOwn) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_ss<T, Tr::kDqCols, 1, 1>(dq, ddS + buf * kDsStep + (4 * wg + kk) * 128, dKq + kk * 128, kk);
    } else {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk)
        wgmma_ss<T, Tr::kDqCols, 1, 1>(dq, ddS + buf * kDsStep + kk * 128, dKq + kk * 128, kk);
    }
    wgmma_commit();
    end_step(acc_dv, acc_dk, dq, &bars.stage_empty[stage], lane, store_dq);
  }
  write_dkv_in_turn<kD / 8, false>(p, grid, w, key_lo, t, acc_dk, acc_dv, kBN);
}

}  // namespace rfa::cuda
