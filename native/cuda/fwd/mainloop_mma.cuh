// The FlashAttention-2 style forward mainloop on mma.sync m16n8k16 + ldmatrix (FwdTraits; every
// head_dim and device, and the score hooks' instance). Included by flash_fwd.cu only.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/fwd/epilogue_split.cuh"
#include "cuda/fwd/softmax_fa2.cuh"
#include "cuda/fwd/split_grid.cuh"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

template <class Tr, typename T, bool kCausal, bool kHooks>
__device__ __forceinline__ void attend_tile(const FlashFwdParams& p, const FwdGrid& grid,
                                            const TileJob& job) {
  using Mma = MmaType<T>;
  constexpr int kMT = Tr::kMTilesPerWarp, kST = Tr::kSTiles, kOT = Tr::kOTiles, kPitch = Tr::kPitch;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + Tr::kBlockM * kPitch;
  T* sV = sK + Tr::kBlockN * kPitch;

  const TileRows tr = tile_rows<Tr, kCausal, kHooks>(p, grid, job);
  if (tr.m0 >= tr.sp.nq) return;
  if (tr.it_begin == tr.it_end) return write_keyless_tile<Tr, T>(p, grid, job, tr);
  const Span& sp = tr.sp;
  const int h = tr.h, m0 = tr.m0, rows_valid = tr.rows_valid, diag = tr.diag, it_begin = tr.it_begin,
            it_end = tr.it_end;
  const T* gQ = bsh_ptr<T>(p.q, p.q_stride, sp.b, sp.q0 + m0, h);
  const T* gK = bsh_ptr<T>(p.k, p.k_stride, sp.b, sp.k0, tr.hk);
  const T* gV = bsh_ptr<T>(p.v, p.v_stride, sp.b, sp.k0, tr.hk);

  const int k_first = it_begin * Tr::kBlockN;
  load_tile_async<Tr::kBlockM, Tr::kHeadDim, kPitch, Tr::kThreads>(sQ, gQ, p.q_stride.row, rows_valid);
  load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sK, gK + int64_t(k_first) * p.k_stride.row,
                                                                   p.k_stride.row, sp.nk - k_first);
  cp_async_commit();
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  const int warp_row0 = warp * Tr::kRowsPerWarp;
  // Per-lane ldmatrix offsets (elements): A (Q) rows lane%16, column half lane/16; B (K) rows
  // lane%8 + 8*(lane/16), column half (lane/8)%2; B^T (V, .trans) rows lane%8 + 8*((lane/8)%2),
  // column half lane/16. See flash_mma.cuh for the fragment layouts.
  const int q_off = (warp_row0 + (lane & 15)) * kPitch + (lane >> 4) * 8;
  const int k_off = ((lane & 7) + (lane >> 4) * 8) * kPitch + ((lane >> 3) & 1) * 8;
  const int v_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kPitch + (lane >> 4) * 8;

  float acc_o[kMT][kOT][4];
  float row_max[kMT][2], row_sum[kMT][2];  // per thread: rows g and g + 8 of each m-tile
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kOT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mt][dt][e] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  for (int it = it_begin; it < it_end; ++it) {
    const int n0 = it * Tr::kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K tile `it` (and Q) landed; every warp is done with the previous V tile
    load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(sV, gV + int64_t(n0) * p.v_stride.row,
                                                                     p.v_stride.row, sp.nk - n0);
    cp_async_commit();

    // S = Q K^T for this warp's 32 rows x kBlockN keys.
    float s[kMT][kST][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kST; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Tr::kDSteps; ++kk) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(qa[mt], sQ + q_off + mt * kMmaM * kPitch + kk * kMmaK);
#pragma unroll
      for (int np = 0; np < kST / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, sK + k_off + np * 16 * kPitch + kk * kMmaK);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Mma::mma(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          Mma::mma(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    if constexpr (kHooks) {
      const SpanHooks hk = span_hooks(p.mods, p.shape, sp, job.j / p.shape.nheads, h, p.seg.num_seqs > 0);
      hook_scores<Tr>(s, hk, m0 + warp_row0 + g, n0 + 2 * t, sp.nq, sp.nk);
      online_softmax<Tr>(s, acc_o, row_max, row_sum, grid.scale_log2);
      if (hk.dropout) drop_probs<Tr>(s, hk, m0 + warp_row0 + g, n0 + 2 * t, sp.nq, sp.nk);
    } else {
      // Masking is needed only on the tile that crosses the span end or the causal diagonal.
      const bool needs_mask = n0 + Tr::kBlockN > sp.nk || (kCausal && n0 + Tr::kBlockN - 1 > m0 + diag);
      if (needs_mask) mask_scores<Tr, kCausal>(s, m0 + warp_row0 + g, n0 + 2 * t, sp.nk, diag);
      online_softmax<Tr>(s, acc_o, row_max, row_sum, grid.scale_log2);
    }

    cp_async_wait<0>();
    __syncthreads();  // V tile `it` landed; every warp is done reading K tile `it`
    if (it + 1 < it_end)
      load_tile_async<Tr::kBlockN, Tr::kHeadDim, kPitch, Tr::kThreads>(
          sK, gK + int64_t(n0 + Tr::kBlockN) * p.k_stride.row, p.k_stride.row, sp.nk - n0 - Tr::kBlockN);
    cp_async_commit();

    // O += P V, with P (16-bit) taken from the score registers as A fragments.
#pragma unroll
    for (int kk = 0; kk < Tr::kNSteps; ++kk) {
      uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        pa[mt][0] = Mma::pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = Mma::pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = Mma::pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = Mma::pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kOT / 2; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, sV + v_off + kk * kMmaK * kPitch + dp * 16);
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          Mma::mma(acc_o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          Mma::mma(acc_o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }

  // Epilogue: out = acc / sum, lse = max * scale + ln(sum); rows that saw no key: 0 and -inf.
  // With p.merge (whole tiles only) the rows are added to the running out/lse instead. The
  // tile's rows and output site are worked out again from the job only now.
  attend_epilogue<Tr, T>(p, grid, job, acc_o, row_max, row_sum);
}

}  // namespace rfa::cuda
