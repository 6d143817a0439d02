// The FlashAttention-2 style forward mainloops' score steps (masks, score hooks, dropout) and
// online softmax, on the mma C-fragment layout both mainloops hold their scores in.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

// Scores of keys past the span and (causal) right of the diagonal become -inf. Element e of
// n-tile nt of m-tile mt is row row0 + 16 mt + 8 (e / 2), key key0 + 8 nt + e % 2.
template <class Tr, bool kCausal>
__device__ __forceinline__ void mask_scores(float (&s)[Tr::kMTilesPerWarp][Tr::kSTiles][4], int row0,
                                            int key0, int nk, int diag) {
#pragma unroll
  for (int mt = 0; mt < Tr::kMTilesPerWarp; ++mt)
#pragma unroll
    for (int nt = 0; nt < Tr::kSTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + mt * kMmaM + (e >> 1) * 8, key = key0 + nt * kMmaN + (e & 1);
        if (key >= nk || (kCausal && key > row + diag)) s[mt][nt][e] = -INFINITY;
      }
}

// Calls f(mt, hi, qp) for each query row a thread holds: half hi of m-tile mt of the mma C
// layout, at position qp (rows past the span read the span's last position; they are never stored).
template <class Tr, class F>
__device__ __forceinline__ void for_each_row(const SpanHooks& hk, int row0, int nq, F&& f) {
#pragma unroll
  for (int mt = 0; mt < Tr::kMTilesPerWarp; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) f(mt, hi, hk.qpos(min(row0 + mt * kMmaM + hi * 8, nq - 1)));
}

// The hook instance's scores: each element through SpanHooks (window mask, softcap, ALiBi), keys
// past the span -inf.
template <class Tr>
__device__ __forceinline__ void hook_scores(float (&s)[Tr::kMTilesPerWarp][Tr::kSTiles][4],
                                            const SpanHooks& hk, int row0, int key0, int nq, int nk) {
  for_each_row<Tr>(hk, row0, nq, [&](int mt, int hi, int qp) {
#pragma unroll
    for (int nt = 0; nt < Tr::kSTiles; ++nt)
#pragma unroll
      for (int e = 2 * hi; e < 2 * hi + 2; ++e) {
        const int key = key0 + nt * kMmaN + (e & 1);
        float& x = s[mt][nt][e];
        const int kp = key < nk ? hk.kpos(key) : 0;
        float unused;
        x = key < nk && hk.visible(qp, kp) ? hk.score(x, qp, kp, &unused) : -INFINITY;
      }
  });
}

// Dropout on the probabilities that multiply V (the softmax sum keeps them all, as flash-attn's).
template <class Tr>
__device__ __forceinline__ void drop_probs(float (&s)[Tr::kMTilesPerWarp][Tr::kSTiles][4],
                                           const SpanHooks& hk, int row0, int key0, int nq, int nk) {
  for_each_row<Tr>(hk, row0, nq, [&](int mt, int hi, int qp) {
#pragma unroll
    for (int nt = 0; nt < Tr::kSTiles; ++nt) {
      const int key = key0 + nt * kMmaN;  // even: the pair key, key + 1
      if (key >= nk) continue;            // probabilities past the span are 0 already
      float z0, z1;
      hk.keep2(qp, hk.kpos(key), hk.kpos(min(key + 1, nk - 1)), &z0, &z1);
      s[mt][nt][2 * hi] *= z0;
      s[mt][nt][2 * hi + 1] *= z1;
    }
  });
}

// Online softmax over one key tile: the rows' new running max, the accumulator and sum rescaled
// to it, scores -> probabilities (in place). A thread holds rows g and g + 8 of each m-tile, in
// the mma C layout that the wgmma accumulators share.
template <class Tr>
__device__ __forceinline__ void online_softmax(float (&s)[Tr::kMTilesPerWarp][Tr::kSTiles][4],
                                               float (&acc_o)[Tr::kMTilesPerWarp][Tr::kOTiles][4],
                                               float (&row_max)[Tr::kMTilesPerWarp][2],
                                               float (&row_sum)[Tr::kMTilesPerWarp][2], float scale_log2) {
  constexpr int kMT = Tr::kMTilesPerWarp, kST = Tr::kSTiles, kOT = Tr::kOTiles;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int hi = 0; hi < 2; ++hi) {
      float mx = row_max[mt][hi];
#pragma unroll
      for (int nt = 0; nt < kST; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hi], s[mt][nt][2 * hi + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // a row lives in the 4 lanes of a quad
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row that has seen no key yet keeps max -inf: take 0 as reference so that its
      // probabilities are exp2(-inf) = 0 rather than NaN.
      const float ref = mx == -INFINITY ? 0.f : mx * scale_log2;
      const float corr = fast_exp2(row_max[mt][hi] * scale_log2 - ref);
      row_max[mt][hi] = mx;
      row_sum[mt][hi] *= corr;
#pragma unroll
      for (int dt = 0; dt < kOT; ++dt) {
        acc_o[mt][dt][2 * hi] *= corr;
        acc_o[mt][dt][2 * hi + 1] *= corr;
      }
#pragma unroll
      for (int nt = 0; nt < kST; ++nt)
#pragma unroll
        for (int e = 2 * hi; e < 2 * hi + 2; ++e) {
          const float pr = fast_exp2(fmaf(s[mt][nt][e], scale_log2, -ref));
          row_sum[mt][hi] += pr;
          s[mt][nt][e] = pr;
        }
    }
}

}  // namespace rfa::cuda
