// Register-fragment steps shared by the wgmma backward mainloops (mainloop_fa2_wgmma.cuh,
// mainloop_wgmma.cuh, mainloop_wgmma_wide.cuh). A warpgroup's m64nN accumulator: thread (g, t)
// of warp w holds rows 16w + g and + 8, columns 8i + 2t and + 1 at [4i, 4i + 4) (flash_wgmma.cuh).
#pragma once
#include <cstdint>

#include "cuda/flash_mma.cuh"
#include "cuda/flash_wgmma.cuh"

namespace rfa::cuda {

// P^T = exp2(S^T scale_log2 - lse_log2) over kTiles 8-query n-tiles; lse from the first query of
// this accumulator's columns.
template <int kTiles>
__device__ __forceinline__ void exp2_scores(float (&s)[4 * kTiles], const float* lse, float scale_log2,
                                            int t) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      s[4 * i + e] = fast_exp2(fmaf(s[4 * i + e], scale_log2, -lse[i * 8 + 2 * t + (e & 1)]));
}

// Zeroes the probabilities of keys past the span's nk and, kCausal, of keys past a query's
// diagonal (bottom-right: key > query + diag); query q0 + 8i + 2t (+ 1) is column 8i + 2t (+ 1),
// keys key_lo and key_lo + 8 the rows.
template <int kTiles, bool kCausal>
__device__ __forceinline__ void mask_scores(float (&s)[4 * kTiles], int q0, int key_lo, int t, int nk,
                                            int diag) {
#pragma unroll
  for (int i = 0; i < kTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q = q0 + i * 8 + 2 * t + (e & 1), key = key_lo + (e >> 1) * 8;
      if (key >= nk || (kCausal && key > q + diag)) s[4 * i + e] = 0.f;
    }
}

// dS^T = P^T (dP^T - dsum) over 64 queries, both packed to 16-bit A fragments of k-step kk =
// queries 16kk..16kk+15 (an accumulator pair packed is an A fragment).
template <class Mma>
__device__ __forceinline__ void pack_pt_dst(const float (&s)[32], const float (&dp)[32], const float* dsum,
                                            int t, uint32_t (&pa)[4][4], uint32_t (&da)[4][4]) {
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
}

// dS^T's A fragments -> a (keys x 64 queries) 16-bit tile: row = key (this thread's: row0 + g and
// + 8), 16-byte chunk = query / 8, swizzled as the tiles the descriptors read.
__device__ __forceinline__ void store_dst_tile(unsigned char* tile, const uint32_t (&da)[4][4], int row0,
                                               int g, int t) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      const int r = row0 + g + hi * 8;
      *reinterpret_cast<uint32_t*>(tile + r * 128 + ((i ^ (r % 8)) * 16) + t * 4) =
          da[i / 2][(i % 2) * 2 + hi];
    }
}

// An fp32 dQ accumulator of kCols columns, scaled, into a dQ tile of `pitch` bytes a row: rows
// row0 + g and + 8, columns col0 + 8i + 2t (+ 1).
template <int kCols>
__device__ __forceinline__ void store_dq_rows(unsigned char* tile, int pitch, int row0, int col0, int g,
                                              int t, const float (&dq)[kCols / 2], float scale) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float* row = reinterpret_cast<float*>(tile + (row0 + hi * 8 + g) * pitch) + col0 + 2 * t;
#pragma unroll
    for (int i = 0; i < kCols / 8; ++i)
      *reinterpret_cast<float2*>(row + i * 8) =
          make_float2(dq[4 * i + 2 * hi] * scale, dq[4 * i + 2 * hi + 1] * scale);
  }
}

}  // namespace rfa::cuda
