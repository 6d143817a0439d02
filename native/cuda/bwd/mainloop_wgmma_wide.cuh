// A consumer warpgroup of the Hopper backward at head_dim 192 and 256 (BwdHopperTraits::kWide,
// sm_90a). The producer warp and the dQ warps are mainloop_wgmma.cuh's.
//
// Both consumers work on the CTA's 64 keys; consumer c owns columns [128c, 128c + kCols) of dK, dV
// and dQ (kCols: 128, or 64 for consumer 1 at head_dim 192), and queries [32c, 32c + 32) of each
// step's scores. Per step (query head h, query tile of 64 rows):
//   S^T = K Q_c^T and dP^T = V dO_c^T (64 keys x 32 queries, every column of K and V);
//   P^T = exp2(S^T scale_log2 - lse_log2), dS^T = P^T (dP^T - dsum), both stored to shared memory
//   (16-bit, dS^T's swizzled layout), once the other consumer has read the previous step's;
//   once both consumers' are there (named barrier):
//   dV_c += P^T dO_c and dK_c += dS^T Q_c (every query; A and B from shared memory), then
//   dQ_c = dS K_c (every key), stored to this consumer's dQ tile for its dQ warp.
// The split by queries keeps the exponentials and the masks in fp32 where they are computed; the
// cost is A read from shared memory by every MMA, and two barriers between the consumers a step.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/bwd/fragments.cuh"
#include "cuda/bwd/mainloop_wgmma.cuh"
#include "cuda/bwd/work.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/hopper_sync.cuh"

namespace rfa::cuda {

// Consumer warp `cwarp` (0..7 over both; warpgroup wg = cwarp / 4): keys 16 (cwarp % 4) + g and
// + 8 of the tile in every MMA whose rows are keys, as in the other kernels' epilogue.
template <class Tr, typename T, bool kCausal, int kCols>
__device__ __forceinline__ void bwd_consume_wide(const FlashBwdParams& p, const BwdGrid& grid,
                                                 const BwdWork& w, const BwdHopperSmem<Tr>& sm, int cwarp) {
  using Mma = MmaType<T>;
  using Nb = BwdNamedBarriers<Tr>;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN;
  constexpr int kQ = kBM / Tr::kConsumers;  // queries of S^T per consumer
  constexpr int kQTiles = kQ / 8;           // its 8-query n-tiles
  constexpr int kDqPitch = kCols * 4 + 32;  // Tr::dq_pitch of this consumer's tile
  static_assert(Tr::kWide && kBN == 64 && kQ == 32 && (kCols == 128 || kCols == 64),
                "64 keys, 32 queries of scores and 128 or 64 columns per consumer");
  BwdHopperBarriers<Tr>& bars = sm.bars();
  const Span& sp = w.sp;
  const int lane = threadIdx.x % kWarpSize;
  const int wg = __shfl_sync(0xffffffffu, cwarp / 4, 0), wq = cwarp % 4;  // warp-uniform
  const int g = lane / 4, t = lane % 4;
  const int key_lo = w.n0 + wq * 16 + g;  // this lane's keys: key_lo and key_lo + 8
  const int q_lo = wg * kQ;               // this consumer's first query of the tile
  const int col0 = wg * 128;              // and its first column

  // Matrix descriptors (layouts as in mainloop_wgmma.cuh). K-major: S^T's A (K, V) and B (Q, dO
  // rows q_lo..), dV's and dK's A (P^T, dS^T); MN-major: dV's and dK's B (dO, Q columns from col0:
  // column blocks from 2 wg), dQ's A (dS, read from dS^T) and B (K, the same columns).
  const uint32_t smem0 = smem_u32(sm.base);
  constexpr uint32_t kColBlockM = kBM * 128, kColBlockN = kBN * 128;  // bytes per column block
  const uint64_t dK = gmma_desc(smem0, 16), dV = gmma_desc(smem0 + Tr::kOffV, 16);
  const uint64_t dQk = gmma_desc(smem0 + Tr::kOffQ + q_lo * 128, 16);
  const uint64_t ddOk = gmma_desc(smem0 + Tr::kOffDout + q_lo * 128, 16);
  const uint64_t dPt = gmma_desc(smem0 + Tr::kOffDs, 16);
  const uint64_t dDst = gmma_desc(smem0 + Tr::kOffDs + Tr::kDsBytes, 16);
  const uint64_t dQm = gmma_desc(smem0 + Tr::kOffQ + col0 / 64 * kColBlockM, kColBlockM);
  const uint64_t ddOm = gmma_desc(smem0 + Tr::kOffDout + col0 / 64 * kColBlockM, kColBlockM);
  const uint64_t dKm = gmma_desc(smem0 + col0 / 64 * kColBlockN, kColBlockN);
  constexpr uint32_t kStageStep = Tr::kQBytes / 16;
  auto koff = [](int kk, int rows) { return uint32_t(((kk / 4) * rows * 128 + (kk % 4) * 32) >> 4); };

  float acc_dk[kCols / 2], acc_dv[kCols / 2];
#pragma unroll
  for (int i = 0; i < kCols / 2; ++i) acc_dk[i] = acc_dv[i] = 0.f;

  // dQ_c (64 queries x kCols columns): rows 16 wq + g (+ 8), columns 8i + 2t (+ 1) of tile wg,
  // scaled, once its dQ warp has read the previous step's.
  float dq[kCols / 2];
  auto store_dq = [&] {
    const float scale = p.shape.softmax_scale;
    named_sync(Nb::dq_empty(wg), Nb::kDqThreads);
    store_dq_rows<kCols>(sm.dq(wg), kDqPitch, wq * 16, 0, g, t, dq, scale);
    fence_proxy_async();  // st.shared -> the bulk reductions' (async proxy) reads
    named_arrive(Nb::dq_full(wg), Nb::kDqThreads);
  };

  if (w.steps > 0) mbar_wait(&bars.kv_full, 0);
  int h, mt;
  step_at<false>(w, w.step0, h, mt);
  for (int st = 0; st < w.steps; ++st, next_step<false>(w, h, mt)) {
    const int stage = st % Tr::kStages;
    const uint32_t parity = (st / Tr::kStages) & 1;
    const int m0 = mt * kBM;

    // S^T = K Q_c^T and dP^T = V dO_c^T, over every column, each once its stage has landed.
    float s[kQ / 2], dp[kQ / 2];
    auto scores = [&](float(&acc)[kQ / 2], uint64_t* full, uint64_t da, uint64_t db) {
      mbar_wait(full, parity);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < Tr::kKSteps; ++kk)
        wgmma_ss<T, kQ, 0, 0>(acc, da + koff(kk, kBN), db + stage * kStageStep + koff(kk, kBM), kk);
      wgmma_commit();
    };
    scores(s, &bars.q_full[stage], dK, dQk);
    scores(dp, &bars.do_full[stage], dV, ddOk);
    wgmma_wait<1>();
    fence_regs(s);

    // P^T, masked in a CTA-uniform branch that only the tiles crossing the diagonal or the keys'
    // end take; query q_lo + 8i + 2t (+ 1) of the tile is column 8i + 2t (+ 1) of s.
    const float* lse = sm.lse(stage) + q_lo;
    const float* dsum = sm.dsum(stage) + q_lo;
    const bool needs_mask = w.n0 + kBN > sp.nk || (kCausal && w.n0 + kBN - 1 > m0 + w.diag);
    exp2_scores<kQTiles>(s, lse, grid.scale_log2, t);
    if (needs_mask) mask_scores<kQTiles, kCausal>(s, m0 + q_lo, key_lo, t, sp.nk, w.diag);
    wgmma_wait<0>();
    fence_regs(dp);

    // P^T and dS^T -> shared memory: row = key within the tile, 16-byte chunk = query / 8 (this
    // consumer's: 4 wg..4 wg + 3), swizzled; once both consumers are past the previous step's
    // MMAs, which read every chunk (a consumer reaches this barrier only after its wgmma_wait<0>).
    // Both sync: with one side's bar.arrive, a consumer could count itself in twice and pass.
    if (st > 0) named_sync(Nb::kDsFree, Tr::kConsumers * Tr::kWgThreads);
    unsigned char* pt_tile = sm.ds(0);
    unsigned char* ds_tile = sm.ds(1);
#pragma unroll
    for (int i = 0; i < kQTiles; ++i)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int r = wq * 16 + g + hi * 8, e = 4 * i + 2 * hi;
        const uint32_t off = r * 128 + (((wg * kQTiles + i) ^ (r % 8)) * 16) + t * 4;
        const float d0 = dsum[i * 8 + 2 * t], d1 = dsum[i * 8 + 2 * t + 1];
        *reinterpret_cast<uint32_t*>(pt_tile + off) = Mma::pack(s[e], s[e + 1]);
        *reinterpret_cast<uint32_t*>(ds_tile + off) =
            Mma::pack(s[e] * (dp[e] - d0), s[e + 1] * (dp[e + 1] - d1));
      }
    fence_proxy_async();
    named_sync(Nb::ds_ready(wg), Nb::kDsThreads);

    // dV_c += P^T dO_c and dK_c += dS^T Q_c over the 64 queries (the softmax scale is applied in
    // the epilogue), then dQ_c = dS K_c over the 64 keys.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk)
      wgmma_ss<T, kCols, 0, 1>(acc_dv, dPt + koff(kk, kBN), ddOm + stage * kStageStep + kk * 128, 1);
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk)
      wgmma_ss<T, kCols, 0, 1>(acc_dk, dDst + koff(kk, kBN), dQm + stage * kStageStep + kk * 128, 1);
    wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) wgmma_ss<T, kCols, 1, 1>(dq, dDst + kk * 128, dKm + kk * 128, kk);
    wgmma_commit();
    end_step(acc_dv, acc_dk, dq, &bars.stage_empty[stage], lane, store_dq);
  }
  write_dkv_in_turn<kCols / 8, false>(p, grid, w, key_lo, t, acc_dk, acc_dv, kBN, col0);
}

}  // namespace rfa::cuda
