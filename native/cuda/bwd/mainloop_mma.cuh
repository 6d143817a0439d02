// The backward's FlashAttention-2 style mainloop on mma.sync m16n8k16 + ldmatrix (BwdTraits):
// head_dim 32, 64, 96 and 128 on every device; the algorithm is in flash_bwd.cu's opening comment.
// Included by flash_bwd.cu only.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/bwd/work.cuh"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

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
        lse = lse_log2(
            p.lse[sp.b * p.lse_stride.batch + h * p.lse_stride.head + (row0 + r) * p.lse_stride.row]);
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

}  // namespace rfa::cuda
