// Backward attention, FlashAttention-2 style on the tensor cores (fp32 accumulate), given the
// GLOBAL lse and dsum = rowsum(dout * out):
//   P = exp(scale q k^T - lse), dV = P^T dO, dP = dO V^T, dS = P (dP - dsum),
//   dK = scale dS^T Q, dQ = scale dS K.
//
// One CTA per (key tile of kBlockN rows, kv head, batch entry or varlen segment), 8 warps of 16
// keys each; it walks every query tile of every query head that shares the kv head (GQA), so dK
// and dV stay in registers and are written once, without atomics. Per query tile each warp
// computes the transposed scores S^T = K Q^T (16 keys x kBlockM queries): P^T and dS^T are then
// A operands of dV += P^T dO and dK += dS^T Q straight from registers. dQ needs dS with queries as
// rows, so dS^T goes through shared memory once and dQ += dS K is added to global memory with
// fp32 atomics (other key tiles add to the same rows). Q, dO, lse and dsum of the next query tile
// load (cp.async, double buffer) while the current one is computed.
//
// Deterministic mode (FlashBwdParams::deterministic): either kernel, and each key tile adds its dQ
// part of a query tile only once the key tiles before it have (wait_turn / pass_turn), so every dQ
// element sums its parts in key-tile order and the bits repeat. Each key tile then walks its query
// tiles last first (step_at), so that the tiles taking turns on a query tile reach it at the same
// step and wait little. A split key tile's CTAs add their dK/dV in split order the same way
// (write_dkv_in_turn).
//
// Two kernels implement this: flash_bwd_wgmma_kernel (head_dim 128 on sm_90: Hopper warpgroup MMAs,
// wgmma, from 128-byte swizzled shared tiles; see its comment below and flash_wgmma.cuh) and
// flash_bwd_kernel (mma.sync m16n8k16 + ldmatrix; head_dim 32 and 64, and every head_dim on other
// devices).
//
// Each version's timings (native/cuda/harness/flash_check.cu; bwd = bwd_dot + bwd, FLOP = 2.5x
// the forward's) against FlashAttention-2: benchmark/RESULTS.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/flash_mma.cuh"
#include "cuda/fill.h"
#include "cuda/flash_traits.h"
#include "cuda/score_hooks.cuh"
#include "cuda/bwd/launch.h"
#include "cuda/bwd/work.cuh"
#include "launch_plan.h"

namespace rfa::cuda {
namespace {

// Zeroes a strided fp32 (b, s, h, d) view: dq before its atomics when not accumulating.
__global__ void zero_bsh_kernel(float* x, BshStrides st, int s, int h, int d, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % d, hh = (e / d) % h, i = (e / (int64_t(d) * h)) % s, b = e / (int64_t(d) * h * s);
    x[b * st.batch + i * st.row + hh * st.head + c] = 0.f;
  }
}

// acc[nt][.] += A (16 rows of this warp, from sA at a_off) x B^T where B rows are kBRows rows of
// sB read as k x n fragments (non-transposed ldmatrix): the shape of S^T = K Q^T and dP^T = V dO^T.
template <class Tr, typename T, int kBRows>
__device__ __forceinline__ void gemm_rows_x_rows(float (&acc)[kBRows / kMmaN][4], const T* sA, int a_off,
                                                 const T* sB, int b_off) {
  using Mma = MmaType<T>;
#pragma unroll
  for (int kk = 0; kk < Tr::kDSteps; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, sA + a_off + kk * kMmaK);
#pragma unroll
    for (int np = 0; np < kBRows / 16; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, sB + b_off + np * 16 * Tr::kPitch + kk * kMmaK);
      Mma::mma(acc[2 * np], a, b[0], b[1]);
      Mma::mma(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// acc (16 x head_dim) += X (16 x kQChunk, fp32 C fragments, packed to 16-bit A fragments) x sB
// (kQChunk x head_dim, transposed ldmatrix): dV += P^T dO and dK += dS^T Q.
template <class Tr, typename T>
__device__ __forceinline__ void gemm_regs_x_tile(float (&acc)[Tr::kDTiles][4],
                                                 const float (&x)[Tr::kQTiles][4], const T* sB, int bt_off) {
  using Mma = MmaType<T>;
#pragma unroll
  for (int kk = 0; kk < Tr::kMSteps; ++kk) {
    const uint32_t a[4] = {Mma::pack(x[2 * kk][0], x[2 * kk][1]), Mma::pack(x[2 * kk][2], x[2 * kk][3]),
                           Mma::pack(x[2 * kk + 1][0], x[2 * kk + 1][1]),
                           Mma::pack(x[2 * kk + 1][2], x[2 * kk + 1][3])};
#pragma unroll
    for (int dp = 0; dp < Tr::kDTiles / 2; ++dp) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, sB + bt_off + kk * kMmaK * Tr::kPitch + dp * 16);
      Mma::mma(acc[2 * dp], a, b[0], b[1]);
      Mma::mma(acc[2 * dp + 1], a, b[2], b[3]);
    }
  }
}

// kHooks: the instance with the score hooks (score_hooks.cuh); the plain ones never pay for them.
template <class Tr, typename T, bool kCausal, bool kHooks>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    flash_bwd_kernel(const FlashBwdParams p, const BwdGrid grid) {
  using Mma = MmaType<T>;
  constexpr int kPitch = Tr::kPitch, kQT = Tr::kQTiles, kDT = Tr::kDTiles;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + Tr::kBlockN * kPitch;
  T* sQ = sV + Tr::kBlockN * kPitch;                  // [kStages][kBlockM][kPitch]
  T* sdO = sQ + Tr::kStages * Tr::kBlockM * kPitch;   // [kStages][kBlockM][kPitch]
  T* sdS = sdO + Tr::kStages * Tr::kBlockM * kPitch;  // [kBlockN][kPitchDs], dS^T
  float* sLse =
      reinterpret_cast<float*>(sdS + Tr::kBlockN * Tr::kPitchDs);  // [kStages][kBlockM], lse * log2(e)
  float* sDsum = sLse + Tr::kStages * Tr::kBlockM;                 // [kStages][kBlockM]

  const BwdWork w = bwd_work<Tr::kBlockN, Tr::kBlockM, kCausal, kHooks>(p, grid);
  if (!w.active) return;
  const Span sp = w.sp;
  const int hk = w.hk, n0 = w.n0, keys_valid = w.keys_valid, diag = w.diag;
  const int step0 = w.step0, steps = w.steps;
  // Step i's query head and query tile (the walk's order: step_at).
  auto walk = [&](int i, int& h, int& mt) {
    if (grid.dq_turns)
      step_at<true>(w, i, h, mt);
    else
      step_at<false>(w, i, h, mt);
  };

  const T* gK = bsh_ptr<T>(p.k, p.k_stride, sp.b, sp.k0 + n0, hk);
  const T* gV = bsh_ptr<T>(p.v, p.v_stride, sp.b, sp.k0 + n0, hk);
  load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sK, gK, p.k_stride.row, keys_valid);
  load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sV, gV, p.v_stride.row, keys_valid);

  // Loads step `st`'s query tile (Q, dO, and lse/dsum rows) into stage `stage`. lse becomes
  // lse * log2(e), and +inf for rows without keys (lse = -inf) or past the span, so that their
  // probabilities exp2(s - lse) are exactly 0.
  auto load_step = [&](int st, int stage) {
    int h, qt;
    walk(step0 + st, h, qt);
    const int m0 = qt * Tr::kBlockM;
    const int rows = min(Tr::kBlockM, sp.nq - m0);
    const int64_t row0 = sp.q0 + m0;
    load_tile_async<Tr::kBlockM, Tr::kHeadDim, kPitch, Tr::kThreads>(
        sQ + stage * Tr::kBlockM * kPitch, bsh_ptr<T>(p.q, p.q_stride, sp.b, row0, h), p.q_stride.row, rows);
    load_tile_async<Tr::kBlockM, Tr::kHeadDim, kPitch, Tr::kThreads>(
        sdO + stage * Tr::kBlockM * kPitch, bsh_ptr<T>(p.dout, p.dout_stride, sp.b, row0, h),
        p.dout_stride.row, rows);
    if (threadIdx.x < Tr::kBlockM) {
      const int r = threadIdx.x;
      float lse = INFINITY, dsum = 0.f;
      if (r < rows) {
        const float l =
            p.lse[sp.b * p.lse_stride.batch + h * p.lse_stride.head + (row0 + r) * p.lse_stride.row];
        lse = l == -INFINITY ? INFINITY : l * kLog2e;
        dsum = p.dsum[sp.b * p.dsum_stride.batch + h * p.dsum_stride.head + (row0 + r) * p.dsum_stride.row];
      }
      sLse[stage * Tr::kBlockM + r] = lse;
      sDsum[stage * Tr::kBlockM + r] = dsum;
    }
  };
  if (steps > 0) load_step(0, 0);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  // Per-lane ldmatrix offsets (elements), see flash_mma.cuh: A rows lane%16 / column half lane/16;
  // B (k x n from n-major rows) rows lane%8 + 8*(lane/16) / column half (lane/8)%2; B from k-major
  // rows (.trans) rows lane%8 + 8*((lane/8)%2) / column half lane/16.
  const int a_off = (warp * Tr::kKeysPerWarp + (lane & 15)) * kPitch + (lane >> 4) * 8;
  const int b_off = ((lane & 7) + (lane >> 4) * 8) * kPitch + ((lane >> 3) & 1) * 8;
  const int bt_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + (lane >> 4) * 8;
  // dQ = dS K tiling: this warp's rows and columns; dS A fragments come from dS^T (.trans).
  const int dq_row0 = (warp / Tr::kDqWarpsD) * Tr::kDqRows, dq_col0 = (warp % Tr::kDqWarpsD) * Tr::kDqCols;
  const int ds_off = ((lane & 7) + (lane >> 4) * 8) * Tr::kPitchDs + dq_row0 + ((lane >> 3) & 1) * 8;
  const int kt_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + dq_col0 + (lane >> 4) * 8;
  const int key_lo = n0 + warp * Tr::kKeysPerWarp + g;  // this lane's keys: key_lo and key_lo + 8

  float acc_dk[kDT][4], acc_dv[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[dt][e] = acc_dv[dt][e] = 0.f;

  for (int st = 0; st < steps; ++st) {
    const int stage = st % Tr::kStages;
    cp_async_wait<0>();
    __syncthreads();  // step st landed; every warp is done with step st-1 (its stage and dS^T)
    if (st + 1 < steps) load_step(st + 1, stage ^ 1);
    cp_async_commit();

    int h, qt;  // query head and query tile
    walk(step0 + st, h, qt);
    const int m0 = qt * Tr::kBlockM;
    const T* sQs = sQ + stage * Tr::kBlockM * kPitch;
    const T* sdOs = sdO + stage * Tr::kBlockM * kPitch;
    const float* lse = sLse + stage * Tr::kBlockM;
    const float* dsum = sDsum + stage * Tr::kBlockM;

    const bool needs_mask = n0 + Tr::kBlockN > sp.nk || (kCausal && n0 + Tr::kBlockN - 1 > m0 + diag);
#pragma unroll 1
    for (int q0 = 0; q0 < Tr::kBlockM; q0 += Tr::kQChunk) {
      // P^T = exp2(S^T * scale_log2 - lse_log2), S^T = K Q^T (16 keys x kQChunk queries per warp).
      float pt[kQT][4] = {};
      gemm_rows_x_rows<Tr, T, Tr::kQChunk>(pt, sK, a_off, sQs + q0 * kPitch, b_off);
      // The hook instance: pt becomes the dropped P^T (for dV), coef the softcap derivative times
      // P^T, and keep_bits which elements survived dropout.
      [[maybe_unused]] float coef[kQT][4];
      [[maybe_unused]] uint32_t keep_bits = 0;
      [[maybe_unused]] float keep_scale = 1.f;
      if constexpr (kHooks) {
        const SpanHooks hk = span_hooks(p.mods, p.shape, sp, w.span_id, h, p.seg.num_seqs > 0);
        keep_scale = hk.keep_scale;
#pragma unroll
        for (int nt = 0; nt < kQT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int q = q0 + nt * kMmaN + 2 * t + (e & 1), key = key_lo + (e >> 1) * 8, row = m0 + q;
            float pr = 0.f, d = 0.f;
            bool keep = true;
            if (row < sp.nq && key < sp.nk) {
              const int qp = hk.qpos(row), kp = hk.kpos(key);
              if (hk.visible(qp, kp)) {
                pr = fast_exp2(fmaf(hk.score(pt[nt][e], qp, kp, &d), grid.scale_log2, -lse[q]));
                if (hk.dropout) keep = hk.kept(qp, kp);
              }
            }
            const int bit = nt * 4 + e;
            if (keep) keep_bits |= 1u << bit;
            coef[nt][e] = d * pr;
            pt[nt][e] = hk.dropout ? (keep ? pr * keep_scale : 0.f) : pr;
          }
      } else {
#pragma unroll
        for (int nt = 0; nt < kQT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int q = q0 + nt * kMmaN + 2 * t + (e & 1), key = key_lo + (e >> 1) * 8;
            float pr = fast_exp2(fmaf(pt[nt][e], grid.scale_log2, -lse[q]));
            if (needs_mask && (key >= sp.nk || (kCausal && key > m0 + q + diag))) pr = 0.f;
            pt[nt][e] = pr;
          }
      }

      // dV += P^T dO
      gemm_regs_x_tile<Tr, T>(acc_dv, pt, sdOs + q0 * kPitch, bt_off);

      // dP^T = V dO^T, then dS^T = P^T (dP^T - dsum) in place (hooked: coef (z dP^T - dsum), with z
      // the dropout factor; dsum is rowsum(dO * O) of the dropped O).
      float dst[kQT][4] = {};
      gemm_rows_x_rows<Tr, T, Tr::kQChunk>(dst, sV, a_off, sdOs + q0 * kPitch, b_off);
#pragma unroll
      for (int nt = 0; nt < kQT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float ds = dsum[q0 + nt * kMmaN + 2 * t + (e & 1)];
          if constexpr (kHooks) {
            const float z = keep_bits >> (nt * 4 + e) & 1u ? keep_scale : 0.f;
            dst[nt][e] = coef[nt][e] * fmaf(z, dst[nt][e], -ds);
          } else {
            dst[nt][e] = pt[nt][e] * (dst[nt][e] - ds);
          }
        }

      // dK += dS^T Q (the softmax scale is applied once, in the epilogue)
      gemm_regs_x_tile<Tr, T>(acc_dk, dst, sQs + q0 * kPitch, bt_off);

      // dS^T -> shared memory (16-bit), for dQ = dS K across all warps' keys.
      T* ds_row = sdS + (warp * Tr::kKeysPerWarp + g) * Tr::kPitchDs + q0 + 2 * t;
#pragma unroll
      for (int nt = 0; nt < kQT; ++nt) {
        *reinterpret_cast<uint32_t*>(ds_row + nt * kMmaN) = Mma::pack(dst[nt][0], dst[nt][1]);
        *reinterpret_cast<uint32_t*>(ds_row + 8 * Tr::kPitchDs + nt * kMmaN) =
            Mma::pack(dst[nt][2], dst[nt][3]);
      }
    }
    __syncthreads();

    // dQ (kBlockM x head_dim) += scale * dS K, added to global memory.
    float acc_dq[Tr::kDqMTiles][Tr::kDqTiles][4];
#pragma unroll
    for (int mt = 0; mt < Tr::kDqMTiles; ++mt)
#pragma unroll
      for (int dt = 0; dt < Tr::kDqTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dq[mt][dt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Tr::kBlockN / kMmaK; ++kk) {
      uint32_t a[Tr::kDqMTiles][4];
#pragma unroll
      for (int mt = 0; mt < Tr::kDqMTiles; ++mt)
        ldmatrix_x4_trans(a[mt], sdS + ds_off + kk * kMmaK * Tr::kPitchDs + mt * kMmaM);
#pragma unroll
      for (int dp = 0; dp < Tr::kDqTiles / 2; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, sK + kt_off + kk * kMmaK * kPitch + dp * 16);
#pragma unroll
        for (int mt = 0; mt < Tr::kDqMTiles; ++mt) {
          Mma::mma(acc_dq[mt][2 * dp], a[mt], b[0], b[1]);
          Mma::mma(acc_dq[mt][2 * dp + 1], a[mt], b[2], b[3]);
        }
      }
    }
    const float scale = p.shape.softmax_scale;
    float* gdq = p.dq + sp.b * p.dq_stride.batch + h * p.dq_stride.head;
    int* turn = dq_turn(p, grid, w, h, qt);
    // This key tile's turn on query tile qt: its place among the key tiles that visit qt (under a
    // window the first of them need not be tile 0).
    int my_turn = n0 / Tr::kBlockN;
    if constexpr (kHooks)
      if (turn) {
        const SpanHooks hk = span_hooks(p.mods, p.shape, sp, w.span_id, h, p.seg.num_seqs > 0);
        int k_begin = 0, k_end = 0;
        hk.key_range(m0, min(Tr::kBlockM, sp.nq - m0), sp.nk, &k_begin, &k_end);
        my_turn -= k_begin / Tr::kBlockN;
      }
    if (turn) wait_turn(turn, my_turn);
#pragma unroll
    for (int mt = 0; mt < Tr::kDqMTiles; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int q = m0 + dq_row0 + mt * kMmaM + hi * 8 + g;
        if (q >= sp.nq) continue;
        float* row = gdq + int64_t(sp.q0 + q) * p.dq_stride.row + dq_col0 + 2 * t;
#pragma unroll
        for (int dt = 0; dt < Tr::kDqTiles; ++dt) {
          const float x = acc_dq[mt][dt][2 * hi] * scale, y = acc_dq[mt][dt][2 * hi + 1] * scale;
          atomic_add_pair(row + dt * kMmaN, x, y, grid.dq_pairs);
        }
      }
    if (turn) pass_turn(turn, my_turn + 1);
  }

  cp_async_wait<0>();  // nothing may still be landing in shared memory when the CTA exits

  write_dkv_in_turn<kDT, true>(p, grid, w, key_lo, t, &acc_dk[0][0], &acc_dv[0][0], Tr::kBlockN);
}

// ---- Hopper path (sm_90a, head_dim 128): the same algorithm on warpgroup MMAs -------------------
// Two warpgroups of 64 keys each (warp w still owns keys 16w..16w+15, so the masks, the epilogue
// and the register layouts match the kernel above). Per query tile of 64 rows each warpgroup
// issues S^T = K Q^T and dP^T = V dO^T (m64n64k16, both operands K-major from shared memory),
// forms P^T and dS^T in registers, then dV += P^T dO and dK += dS^T Q (m64n128k16, A from
// registers, B MN-major from shared memory) while dS^T is stored to shared memory. dQ of a step
// needs the dS^T of both warpgroups, so it runs one step later, after the barrier that opens the
// next step: warpgroup w issues dQ[:, 64w..64w+63] = dS K (m64n64k16, both operands MN-major)
// before that step's dV/dK and adds it to global memory with fp32 atomics while they run. One
// barrier per step; dS^T alternates two buffers.
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

// kDet: the deterministic mode (grid.dq_turns set), a template parameter so that the
// default instance keeps its code and registers. kWindow: a sliding window and/or global positions
// (ScoreMods::masks_only; the call's causal flag is the window's right edge 0), masked by the
// score hooks' visibility on the tiles that are not wholly inside every row's window.
template <typename T, bool kCausal, bool kDet, bool kWindow = false>
__global__ void __launch_bounds__(BwdWgTraits::kThreads, 1)
    flash_bwd_wgmma_kernel(const FlashBwdParams p, const BwdGrid grid) {
#ifdef RFA_WGMMA_ENABLED
  using Tr = BwdWgTraits;
  using Mma = MmaType<T>;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem =
      smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);   // swizzle atoms: 1024-aligned
  T* sK = reinterpret_cast<T*>(smem);                             // [2][kBN][64], swizzled
  T* sV = sK + Tr::kTileN;                                        // [2][kBN][64]
  T* sQ = sV + Tr::kTileN;                                        // [kStages][2][kBM][64]
  T* sdO = sQ + Tr::kStages * Tr::kTileM;                         // [kStages][2][kBM][64]
  T* sdS = sdO + Tr::kStages * Tr::kTileM;                        // dS^T [2][kBN][kBM]
  float* sLse = reinterpret_cast<float*>(sdS + 2 * Tr::kTileDs);  // [kStages][kBM], lse * log2(e)
  float* sDsum = sLse + Tr::kStages * kBM;                        // [kStages][kBM]

  static_assert(!(kCausal && kWindow), "a window instance takes causal as its right edge");
  const BwdWork w = bwd_work<kBN, kBM, kCausal, kWindow>(p, grid);
  if (!w.active) return;
  const Span sp = w.sp;
  [[maybe_unused]] const SpanHooks hooks =
      kWindow ? span_hooks(p.mods, p.shape, sp, w.span_id, w.hk * w.group, p.seg.num_seqs > 0) : SpanHooks{};
  const int hk = w.hk, n0 = w.n0, group = w.group, keys_valid = w.keys_valid, diag = w.diag;
  const int m_begin = w.m_begin, m_tiles = w.m_tiles, step0 = w.step0, steps = w.steps;

  const T* gK = bsh_ptr<T>(p.k, p.k_stride, sp.b, sp.k0 + n0, hk);
  const T* gV = bsh_ptr<T>(p.v, p.v_stride, sp.b, sp.k0 + n0, hk);
  load_tile_sw128<kBN, Tr::kThreads>(sK, gK, p.k_stride.row, keys_valid);
  load_tile_sw128<kBN, Tr::kThreads>(sV, gV, p.v_stride.row, keys_valid);

  // Q and dO tiles of query head h, rows [m0, m0 + kBM), into stage `stage`.
  auto load_tiles = [&](int h, int m0, int stage) {
    const int rows = min(kBM, sp.nq - m0);
    const int64_t row0 = sp.q0 + m0;
    load_tile_sw128<kBM, Tr::kThreads>(sQ + stage * Tr::kTileM, bsh_ptr<T>(p.q, p.q_stride, sp.b, row0, h),
                                       p.q_stride.row, rows);
    load_tile_sw128<kBM, Tr::kThreads>(
        sdO + stage * Tr::kTileM, bsh_ptr<T>(p.dout, p.dout_stride, sp.b, row0, h), p.dout_stride.row, rows);
  };
  // Their lse and dsum rows, read into registers by threads < kBM (one row each) a step ahead and
  // stored at the end of the step, so that no warp waits on these loads. lse becomes lse * log2(e),
  // and +inf for rows without keys (lse = -inf) or past the span: probabilities exp2(s - lse) = 0.
  float row_lse = -INFINITY, row_dsum = 0.f;
  auto fetch_stats = [&](int h, int m0) {
    const int r = threadIdx.x;
    row_lse = -INFINITY, row_dsum = 0.f;
    if (r < kBM && m0 + r < sp.nq) {
      const int64_t row = sp.q0 + m0 + r;
      row_lse = p.lse[sp.b * p.lse_stride.batch + h * p.lse_stride.head + row * p.lse_stride.row];
      row_dsum = p.dsum[sp.b * p.dsum_stride.batch + h * p.dsum_stride.head + row * p.dsum_stride.row];
    }
  };
  auto store_stats = [&](int stage) {
    if (threadIdx.x < kBM) {
      sLse[stage * kBM + threadIdx.x] = row_lse == -INFINITY ? INFINITY : row_lse * kLog2e;
      sDsum[stage * kBM + threadIdx.x] = row_dsum;
    }
  };
  // Steps walk (query head, query tile) in step_at's order; coordinates advance without divisions.
  auto advance = [&](int& h, int& mt) {
    if constexpr (kDet) {
      if (++h == hk * group + group) h = hk * group, --mt;
    } else {
      if (++mt == m_begin + m_tiles) mt = m_begin, ++h;
    }
  };
  int cur_h, cur_mt;
  step_at<kDet>(w, step0, cur_h, cur_mt);
  int nxt_h = cur_h, nxt_mt = cur_mt;
  advance(nxt_h, nxt_mt);
  if (steps > 0) {
    load_tiles(cur_h, cur_mt * kBM, 0);
    fetch_stats(cur_h, cur_mt * kBM);
    store_stats(0);
  }
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  // The warpgroup index as lane 0's value: warp-uniform to the compiler, so the descriptor
  // arithmetic below stays in uniform registers (without it: more instructions, a spill).
  const int wg = __shfl_sync(0xffffffffu, warp / 4, 0), wq = warp % 4;
  const int g = lane / 4, t = lane % 4;
  const int key_lo = n0 + warp * 16 + g;  // this lane's keys: key_lo and key_lo + 8

  // Matrix descriptors of the operand tiles; a k-step adds a constant (bytes >> 4) to the start
  // address field, which cannot carry out of it (shared addresses < 256 KB).
  // K-major (S^T, dP^T): k-step kk moves 32 bytes within a 128-byte row, and to the second column
  // half after four. MN-major (dV, dK, dQ): a k-step is 16 rows = 2048 bytes.
  const uint32_t smem0 = smem_u32(smem);
  const uint64_t dK = gmma_desc(smem0 + wg * 64 * 128, 16);                   // rows 64wg.. of K
  const uint64_t dV = gmma_desc(smem0 + Tr::kTileN * 2 + wg * 64 * 128, 16);  // rows 64wg.. of V
  const uint64_t dQk = gmma_desc(smem0 + 4 * Tr::kTileN, 16);                 // Q stage 0, K-major
  const uint64_t ddOk = gmma_desc(smem0 + 4 * Tr::kTileN + 2 * Tr::kStages * Tr::kTileM, 16);
  const uint64_t dQm = gmma_desc(smem0 + 4 * Tr::kTileN, kBM * 128);  // Q stage 0, MN-major
  const uint64_t ddOm = gmma_desc(smem0 + 4 * Tr::kTileN + 2 * Tr::kStages * Tr::kTileM, kBM * 128);
  const uint64_t ddS = gmma_desc(smem_u32(sdS), 16);           // dS^T buffer 0
  const uint64_t dKq = gmma_desc(smem0 + wg * kBN * 128, 16);  // column half wg of K
  constexpr uint32_t kStageStep = Tr::kTileM * 2 / 16, kDsStep = Tr::kTileDs * 2 / 16;
  auto koff = [](int kk, int rows) { return uint32_t(((kk / 4) * rows * 128 + (kk % 4) * 32) >> 4); };

  float acc_dk[64], acc_dv[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc_dk[i] = acc_dv[i] = 0.f;

  // dQ of one step (this warpgroup's 64 columns): rows 16 wq + g (+8), columns 64 wg + 8i + 2t (+1).
  float dq[32];
  auto issue_dq = [&](int buf) {  // dQ = dS K: A = dS (queries x keys) from dS^T, B = K, both MN-major
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<T, 64, 1, 1>(dq, ddS + buf * kDsStep + kk * 128, dKq + kk * 128, kk);
    wgmma_commit();
  };
  auto add_dq = [&](int h, int m0) {
    const float scale = p.shape.softmax_scale;
    float* gdq = p.dq + sp.b * p.dq_stride.batch + h * p.dq_stride.head;
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int q = m0 + wq * 16 + hi * 8 + g;
      if (q >= sp.nq) continue;
      float* row = gdq + int64_t(sp.q0 + q) * p.dq_stride.row + wg * 64 + 2 * t;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float x = dq[4 * i + 2 * hi] * scale, y = dq[4 * i + 2 * hi + 1] * scale;
        atomic_add_pair(row + i * 8, x, y, grid.dq_pairs);
      }
    }
  };

  // Deterministic mode: the dQ part of a query tile goes in only in this key tile's turn. The
  // waits' barriers are reached by every thread (add_dq's call sites are CTA-uniform). The turn
  // is handed on by thread 0 after the next step's opening barrier, once that step's first MMAs
  // are issued (pass_pending), so its fence waits for the atomics while the tensor cores work.
  int* pending_turn = nullptr;
  int pending_next = 0;
  auto add_dq_in_turn = [&](int h, int m0) {
    if constexpr (kDet) {
      int* turn = dq_turn(p, grid, w, h, m0 / kBM);
      // This key tile's place among those that visit the query tile (under a window the first of
      // them need not be tile 0).
      int mine = n0 / kBN;
      if constexpr (kWindow) {
        int k_begin = 0, k_end = 0;
        hooks.key_range(m0, min(kBM, sp.nq - m0), sp.nk, &k_begin, &k_end);
        mine -= k_begin / kBN;
      }
      wait_turn(turn, mine);
      add_dq(h, m0);
      pending_turn = turn, pending_next = mine + 1;
    } else {
      add_dq(h, m0);
    }
  };
  auto pass_pending = [&] {  // after a barrier that follows the pending turn's atomics
    if constexpr (kDet) {
      if (pending_turn) pass_turn_after_barrier(pending_turn, pending_next);
      pending_turn = nullptr;
    }
  };

  int prv_h = 0, prv_m0 = 0;  // the previous step's query head and first row (its dQ is pending)
  for (int st = 0; st < steps; ++st) {
    const int stage = st % Tr::kStages, buf = st % 2;
    cp_async_wait<0>();
    fence_proxy_async();  // cp.async and st.shared data -> wgmma (async proxy) reads
    __syncthreads();      // step st landed; every warp is done with step st-1 (its stage, its dS^T stores)
    if (st + 1 < steps) {
      load_tiles(nxt_h, nxt_mt * kBM, stage ^ 1);
      fetch_stats(nxt_h, nxt_mt * kBM);
    }
    cp_async_commit();

    const int m0 = cur_mt * kBM;
    const float* lse = sLse + stage * kBM;
    const float* dsum = sDsum + stage * kBM;

    // S^T = K Q^T and dP^T = V dO^T (64 keys x 64 queries per warpgroup).
    float s[32], dp[32];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<T, 64, 0, 0>(s, dK + koff(kk, kBN), dQk + stage * kStageStep + koff(kk, kBM), kk);
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<T, 64, 0, 0>(dp, dV + koff(kk, kBN), ddOk + stage * kStageStep + koff(kk, kBM), kk);
    wgmma_commit();
    pass_pending();  // the previous step's dQ turn (the barrier above followed its atomics)
    wgmma_wait<1>();
    fence_regs(s);

    // P^T = exp2(S^T * scale_log2 - lse_log2), masked.
    bool needs_mask = n0 + kBN > sp.nk || (kCausal && n0 + kBN - 1 > m0 + diag);
    if constexpr (kWindow)
      needs_mask = needs_mask || !hooks.sees_whole(m0, min(m0 + kBM, sp.nq) - 1, n0, n0 + keys_valid - 1);
    if constexpr (kCausal || kWindow) {
      // Causal: exponentials first, then the mask in a CTA-uniform branch taken by diagonal tiles
      // only (fused into the loop below, the mask's predicates cost issue slots on every tile).
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          s[4 * i + e] = fast_exp2(fmaf(s[4 * i + e], grid.scale_log2, -lse[i * 8 + 2 * t + (e & 1)]));
      if (needs_mask) {
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int q = i * 8 + 2 * t + (e & 1), key = key_lo + (e >> 1) * 8;
            bool hidden = key >= sp.nk;
            if constexpr (kWindow)
              hidden = hidden || !hooks.visible(hooks.qpos(min(m0 + q, sp.nq - 1)), hooks.kpos(key));
            else
              hidden = hidden || key > m0 + q + diag;
            if (hidden) s[4 * i + e] = 0.f;
          }
      }
    } else {
      // Full attention: only a key tail is masked; fused (here the split costs registers: a spill).
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int q = i * 8 + 2 * t + (e & 1), key = key_lo + (e >> 1) * 8;
          float pr = fast_exp2(fmaf(s[4 * i + e], grid.scale_log2, -lse[q]));
          if (needs_mask && key >= sp.nk) pr = 0.f;
          s[4 * i + e] = pr;
        }
    }
    wgmma_wait<0>();
    fence_regs(dp);
    // dS^T = P^T (dP^T - dsum); both become 16-bit A fragments, k-step kk = queries 16kk..16kk+15.
    uint32_t pa[4][4], da[4][4];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      float ds[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[e] = s[4 * i + e] * (dp[4 * i + e] - dsum[i * 8 + 2 * t + (e & 1)]);
      pa[i / 2][(i % 2) * 2] = Mma::pack(s[4 * i], s[4 * i + 1]);
      pa[i / 2][(i % 2) * 2 + 1] = Mma::pack(s[4 * i + 2], s[4 * i + 3]);
      da[i / 2][(i % 2) * 2] = Mma::pack(ds[0], ds[1]);
      da[i / 2][(i % 2) * 2 + 1] = Mma::pack(ds[2], ds[3]);
    }

    // dQ of step st-1 (at st == 0 it reads an unwritten buffer and is discarded), then dV += P^T dO
    // and dK += dS^T Q (the softmax scale is applied in the epilogue).
    issue_dq(buf ^ 1);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<T, 128, 1>(acc_dv, pa[kk], ddOm + stage * kStageStep + kk * 128, 1);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<T, 128, 1>(acc_dk, da[kk], dQm + stage * kStageStep + kk * 128, 1);
    wgmma_commit();

    // dS^T -> shared memory: row = key within the tile, 16-byte chunk = query / 8, swizzled.
    unsigned char* ds_tile = reinterpret_cast<unsigned char*>(sdS + buf * Tr::kTileDs);
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int r = warp * 16 + g + hi * 8;
        *reinterpret_cast<uint32_t*>(ds_tile + r * 128 + ((i ^ (r % 8)) * 16) + t * 4) =
            da[i / 2][(i % 2) * 2 + hi];
      }
    if (st + 1 < steps) store_stats(stage ^ 1);  // stage ^ 1 was last read in step st-1
    wgmma_wait<1>();                             // dQ of step st-1: add it while dV and dK run
    fence_regs(dq);
    if (st > 0) add_dq_in_turn(prv_h, prv_m0);
    wgmma_wait<0>();
    fence_regs(acc_dv);
    fence_regs(acc_dk);

    prv_h = cur_h, prv_m0 = m0;
    cur_h = nxt_h, cur_mt = nxt_mt;
    advance(nxt_h, nxt_mt);
  }
  if (steps > 0) {  // dQ of the last step
    fence_proxy_async();
    __syncthreads();
    pass_pending();
    issue_dq((steps - 1) % 2);
    wgmma_wait<0>();
    fence_regs(dq);
    add_dq_in_turn(prv_h, prv_m0);
    if constexpr (kDet) {
      __syncthreads();
      pass_pending();
    }
  }
  cp_async_wait<0>();  // nothing may still be landing in shared memory when the CTA exits

  write_dkv_in_turn<16, kDet>(p, grid, w, key_lo, t, acc_dk, acc_dv, kBN);
#endif
}

// One CTA per (key tile, kv head, span, split) of a backward kernel with traits Tr.
template <class Tr, class Kernel>
void launch_key_tiles(Kernel kernel, const char* name, const FlashBwdParams& p, const BwdGrid& grid,
                      cudaStream_t s) {
  const int64_t blocks = int64_t(grid.num_n_blocks) * p.shape.nheads_k * grid.num_spans * grid.num_splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_bwd: too many key tiles for one launch");
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid);
  RFA_CHECK_LAUNCH(name);
}

template <int kHeadDim, typename T, bool kCausal, bool kHooks = false>
void launch_bwd(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  using Tr = BwdTraits<kHeadDim>;
  launch_key_tiles<Tr>(flash_bwd_kernel<Tr, T, kCausal, kHooks>, "flash_bwd_kernel", p, grid, s);
}

template <typename T, bool kCausal, bool kDet, bool kWindow = false>
void launch_bwd_wgmma(const FlashBwdParams& p, const BwdGrid& grid, cudaStream_t s) {
  launch_key_tiles<BwdWgTraits>(flash_bwd_wgmma_kernel<T, kCausal, kDet, kWindow>, "flash_bwd_wgmma_kernel",
                                p, grid, s);
}

void zero_bsh(float* x, const BshStrides& st, int b, int s, int h, int d, cudaStream_t stream,
              const char* what) {
  const int64_t n = int64_t(b) * s * h * d;
  if (n == 0) return;
  // A contiguous view is one memset; the kernel (64-bit index arithmetic per element) is for
  // strided views only (packed gradients).
  if (st.head == d && st.row == int64_t(h) * d && (b == 1 || st.batch == int64_t(s) * h * d))
    return fill(x, DType::f32, n, 0.f, stream);
  const int threads = 256;
  const int64_t want = (n + threads - 1) / threads;
  zero_bsh_kernel<<<unsigned(want < 8192 ? want : 8192), threads, 0, stream>>>(x, st, s, h, d, n);
  RFA_CHECK_LAUNCH(what);
}

// How many CTAs share each key tile's query steps. Both kernels run one CTA per SM, so a grid of
// few key tiles (the Python project's 5 heads; the zigzag ring's 4096-key half blocks: 160 CTAs
// on 132 SMs, 1.2 waves) leaves most SMs idle in its last wave. plan_bwd_splits (launch_plan.h)
// runs each count through the launch simulation; here only the query steps each key tile sees.
// Cached per shape and thread (a ring step calls this every time).
template <class Tr>
int plan_splits(const FlashBwdParams& p, int num_n_blocks, const LaunchOverrides& o) {
  const AttnShape& sh = p.shape;
  if (p.seg.num_seqs > 0 || sh.batch == 0 || sh.seqlen_q == 0) return 1;
  if (o.bwd_splits > 0) return o.bwd_splits;
  // Deterministic mode: a causal key tile's splits start at other query tiles than its neighbours',
  // which breaks the lockstep of the dQ turns (step_at): split causal grids ran slower than
  // unsplit ones. Without the mask the splits pay as in the default mode, e.g. on the zigzag
  // ring's s8192/4096 h5 half block (measured: benchmark/RESULTS.md).
  if (p.deterministic && sh.causal) return 1;
  const int sms = current_device().sms;
  const int64_t per_tile = int64_t(sh.nheads_k) * sh.batch;  // CTAs per key tile and split
  if (int64_t(num_n_blocks) * per_tile >= 4 * int64_t(sms)) return 1;
  using Key = std::array<int64_t, 8>;
  static thread_local std::map<Key, int> cache;
  const Key key{num_n_blocks, sh.nheads, sh.nheads_k, sh.batch, sh.seqlen_q, sh.seqlen_k, sh.causal, sms};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const int group = sh.nheads / sh.nheads_k, diag = sh.seqlen_k - sh.seqlen_q;
  const int m_total = (sh.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  std::vector<int> steps(static_cast<size_t>(num_n_blocks));
  for (int n = 0; n < num_n_blocks; ++n) {  // as bwd_work
    const int first_row = sh.causal ? std::max(0, n * Tr::kBlockN - diag) : 0;
    steps[size_t(n)] = first_row < sh.seqlen_q ? group * (m_total - first_row / Tr::kBlockM) : 0;
  }
  const int splits = plan_bwd_splits(steps, int(per_tile), sms, 8);
  cache.emplace(key, splits);
  return splits;
}

// Sizes the grid for the kernel with traits Tr; a split adds its dK/dV onto zeros when the call
// does not accumulate them; the deterministic mode's turn counters start at zero in `turns`.
template <class Tr>
BwdGrid size_grid(const FlashBwdParams& p, BwdGrid grid, int max_q, int max_k, cudaStream_t s,
                  ScratchBlock& turns, const LaunchOverrides& o) {
  grid.num_n_blocks = (max_k + Tr::kBlockN - 1) / Tr::kBlockN;
  grid.num_splits = plan_splits<Tr>(p, grid.num_n_blocks, o);
  if (p.deterministic) {
    grid.num_m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
    const size_t dq_count = size_t(grid.num_spans) * p.shape.nheads * grid.num_m_blocks;
    const size_t dkv_count =
        grid.num_splits > 1 ? size_t(grid.num_spans) * p.shape.nheads_k * grid.num_n_blocks : 0;
    const size_t bytes = (dq_count + dkv_count) * sizeof(int);
    grid.dq_turns = static_cast<int*>(turns.get(bytes));
    if (dkv_count) grid.dkv_turns = grid.dq_turns + dq_count;
    RFA_CUDA_CHECK(cudaMemsetAsync(grid.dq_turns, 0, bytes, s));
  }
  if (grid.num_splits > 1 && !p.accumulate_dkv()) {
    const AttnShape& sh = p.shape;
    zero_bsh(p.dk, p.dk_stride, sh.batch, sh.seqlen_k, sh.nheads_k, sh.head_dim, s, "zero_bsh_kernel (dk)");
    zero_bsh(p.dv, p.dv_stride, sh.batch, sh.seqlen_k, sh.nheads_k, sh.head_dim, s, "zero_bsh_kernel (dv)");
  }
  return grid;
}

template <int kHeadDim, typename T>
void dispatch_causal(const FlashBwdParams& p, BwdGrid grid, int max_q, int max_k, cudaStream_t s,
                     ScratchBlock& turns, const LaunchOverrides& o) {
  // The wgmma kernel exists as sm_90a machine code only: other devices (and the compute_90 PTX
  // fallback, where its body is empty) take the mma.sync kernel.
  // The hook instances mask causal calls themselves (window right 0, global positions); the wgmma
  // kernel's takes a window and positions alone.
  const bool hooks = p.mods.any(p.shape.causal);
  if (kHeadDim == 128 && current_device().sm90 && (!hooks || p.mods.masks_only())) {
    grid = size_grid<BwdWgTraits>(p, grid, max_q, max_k, s, turns, o);
    static_assert(
        BwdHopperTraits::kBlockN == BwdWgTraits::kBlockN && BwdHopperTraits::kBlockM == BwdWgTraits::kBlockM,
        "the Hopper backward runs on the grid sized for the wgmma kernel");
    if (o.bwd_kernel != 1 && flash_bwd_hopper(p, grid, s)) return;
    const bool c = p.shape.causal, d = p.deterministic;
    if (hooks && d)
      launch_bwd_wgmma<T, false, true, true>(p, grid, s);
    else if (hooks)
      launch_bwd_wgmma<T, false, false, true>(p, grid, s);
    else if (c && d)
      launch_bwd_wgmma<T, true, true>(p, grid, s);
    else if (c)
      launch_bwd_wgmma<T, true, false>(p, grid, s);
    else if (d)
      launch_bwd_wgmma<T, false, true>(p, grid, s);
    else
      launch_bwd_wgmma<T, false, false>(p, grid, s);
    return;
  }
  grid = size_grid<BwdTraits<kHeadDim>>(p, grid, max_q, max_k, s, turns, o);
  if (hooks)
    launch_bwd<kHeadDim, T, false, true>(p, grid, s);
  else if (p.shape.causal)
    launch_bwd<kHeadDim, T, true>(p, grid, s);
  else
    launch_bwd<kHeadDim, T, false>(p, grid, s);
}

template <typename T>
void dispatch_head_dim(const FlashBwdParams& p, const BwdGrid& grid, int max_q, int max_k, cudaStream_t s,
                       ScratchBlock& turns, const LaunchOverrides& o) {
  switch (p.shape.head_dim) {
    case 32:
      return dispatch_causal<32, T>(p, grid, max_q, max_k, s, turns, o);
    case 64:
      return dispatch_causal<64, T>(p, grid, max_q, max_k, s, turns, o);
    default:
      return dispatch_causal<128, T>(p, grid, max_q, max_k, s, turns, o);
  }
}

bool fp32_pairs_aligned(const float* x, const BshStrides& st) {
  return reinterpret_cast<uintptr_t>(x) % 8 == 0 && st.batch % 2 == 0 && st.row % 2 == 0 && st.head % 2 == 0;
}

}  // namespace

void flash_bwd(const FlashBwdParams& p, cudaStream_t s, const Scratch& scratch) {
  flash_bwd(p, s, scratch, process_overrides());
}

void flash_bwd(const FlashBwdParams& p, cudaStream_t s, const Scratch& scratch, const LaunchOverrides& o) {
  check_mods("flash_bwd", p.mods, p.seg);
  const AttnShape& sh = p.shape;
  check_attn("flash_bwd", sh, p.dtype, p.seg);
  const bool varlen = p.seg.num_seqs > 0;
  RFA_CHECK_ARG(!varlen || p.accumulate_dkv(), "flash_bwd: varlen segments need accumulate (dq, dk and dv)");
  const int num_spans = varlen ? p.seg.num_seqs : sh.batch;
  const int max_q = varlen ? p.seg.max_seqlen_q : sh.seqlen_q;
  const int max_k = varlen ? p.seg.max_seqlen_k : sh.seqlen_k;
  if (num_spans == 0) return;
  RFA_CHECK_ARG(p.q && p.k && p.v && p.dout && p.lse && p.dsum && p.dq && p.dk && p.dv,
                "flash_bwd: null tensor");
  check_view16("flash_bwd", "q", p.q, p.q_stride);
  check_view16("flash_bwd", "k", p.k, p.k_stride);
  check_view16("flash_bwd", "v", p.v, p.v_stride);
  check_view16("flash_bwd", "dout", p.dout, p.dout_stride);

  // dq receives atomics from every key tile: start from zero.
  if (!p.accumulate && max_q > 0)
    zero_bsh(p.dq, p.dq_stride, sh.batch, sh.seqlen_q, sh.nheads, sh.head_dim, s, "zero_bsh_kernel (dq)");
  if (max_k == 0) return;
  const BwdGrid grid{0,
                     num_spans,
                     sh.softmax_scale * kLog2e,
                     fp32_pairs_aligned(p.dq, p.dq_stride),
                     1,
                     fp32_pairs_aligned(p.dk, p.dk_stride) && fp32_pairs_aligned(p.dv, p.dv_stride)};
  ScratchBlock turns(scratch);  // deterministic mode only; released once the launch is queued
  if (p.dtype == DType::bf16)
    dispatch_head_dim<__nv_bfloat16>(p, grid, max_q, max_k, s, turns, o);
  else
    dispatch_head_dim<__half>(p, grid, max_q, max_k, s, turns, o);
}

}  // namespace rfa::cuda
