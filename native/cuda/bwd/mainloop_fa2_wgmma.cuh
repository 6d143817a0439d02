// The backward's FlashAttention-2 style mainloop on Hopper warpgroup MMAs (BwdWgTraits, sm_90a,
// head_dim 128), which takes the deterministic mode, sliding windows and varlen segments that the
// Hopper backward (bwd/mainloop_wgmma.cuh) does not cover. Included by flash_bwd.cu only.
//
// Two warpgroups of 64 keys each (warp w still owns keys 16w..16w+15, so the masks, the epilogue
// and the register layouts match the mma.sync kernel's, bwd/mainloop_mma.cuh). Per query tile of 64 rows each
// warpgroup issues S^T = K Q^T and dP^T = V dO^T (m64n64k16, both operands K-major from shared memory), forms
// P^T and dS^T in registers, then dV += P^T dO and dK += dS^T Q (m64n128k16, A from registers, B MN-major
// from shared memory) while dS^T is stored to shared memory. dQ of a step needs the dS^T of both warpgroups,
// so it runs one step later, after the barrier that opens the next step: warpgroup w issues dQ[:,
// 64w..64w+63] = dS K (m64n64k16, both operands MN-major) before that step's dV/dK and adds it to global
// memory with fp32 atomics while they run. One barrier per step; dS^T alternates two buffers.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/bwd/fragments.cuh"
#include "cuda/bwd/work.cuh"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

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
      sLse[stage * kBM + threadIdx.x] = lse_log2(row_lse);
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
      exp2_scores<8>(s, lse, grid.scale_log2, t);
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
    // dS^T = P^T (dP^T - dsum); both become 16-bit A fragments.
    uint32_t pa[4][4], da[4][4];
    pack_pt_dst<Mma>(s, dp, dsum, t, pa, da);

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

    store_dst_tile(reinterpret_cast<unsigned char*>(sdS + buf * Tr::kTileDs), da, warp * 16, g, t);  // dS^T
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

}  // namespace rfa::cuda
