// The Hopper forward's mainloop (FwdHopperTraits, sm_90a): the producer thread's TMA loads and a
// consumer warpgroup's wgmma pipeline for one query tile.
//
// Per key tile i a consumer, in its turn, issues S_i = Q K_i^T and O += P_{i-1} V_{i-1} back to
// back; S_i is waited for first and its softmax runs while P_{i-1} V_{i-1} is still in the tensor
// cores (intra-warpgroup overlap). The turns of the two consumers alternate through two named
// barriers (ping-pong), so one warpgroup's softmax runs under the other's MMAs.
//
// The online softmax runs in the log2 domain on raw scores: p = exp2(s * scale_log2 - m *
// scale_log2) with m the running row max, one FFMA + one MUFU.EX2 per score; O and the row sums
// are rescaled by exp2((m_old - m_new) * scale_log2) once the P V in flight has landed.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/fwd/epilogue.cuh"
#include "cuda/hopper_sync.cuh"
#include "cuda/fwd/tile_scheduler.cuh"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

// Which score hooks an instance compiles: none; the masks of a window and global positions
// (ScoreMods::masks_only); or every hook, softcap, ALiBi and dropout too. Compiling every hook
// into the masks' instance would cost a window alone registers (spills), so it has its own.
enum FwdHooks : int { kNoHooks = 0, kMaskHooks = 1, kScoreHooks = 2 };

// The CTA's shared memory past the tiles (Q, then kStages K stages, then kStages V stages; each a
// [kColBlocks][rows][64] 128-byte swizzled tile).
template <int kStages>
struct FwdHopperBarriers {
  uint64_t q_full, q_empty;
  uint64_t k_full[kStages], k_empty[kStages], v_full[kStages], v_empty[kStages];
  TileMailbox mailbox;
  static constexpr int kConsumerWarps = TileMailbox::kReaders;  // each releases what it has read
  __device__ __forceinline__ void init() {
    mbar_init(&q_full, 1), mbar_init(&q_empty, kConsumerWarps);
    for (int i = 0; i < kStages; ++i) {
      mbar_init(&k_full[i], 1), mbar_init(&k_empty[i], kConsumerWarps);
      mbar_init(&v_full[i], 1), mbar_init(&v_empty[i], kConsumerWarps);
    }
    mailbox.init();
  }
};

// Key tiles [first, first + count) that a 128-row query tile from row m0 of span sp sees: all of
// them; (kCausal, bottom-right) up to its last row's diagonal; (kHooks: the score hooks, causal as
// the window's right edge 0) those that may hold a key of some row's window, by the hooks'
// key_range (the tiles the backward's query_range agrees with).
struct KeyTiles {
  int first, count;
};
template <class Tr, bool kCausal, int kHooks, bool kVarlen>
__device__ __forceinline__ KeyTiles fwd_key_tiles(const FlashFwdParams& p, const Span& sp, const FwdTile& ft,
                                                  int m0) {
  if constexpr (kHooks != kNoHooks) {
    const SpanHooks hk = span_hooks(p.mods, p.shape, sp, ft.b, ft.h, kVarlen);
    int k_begin = 0, k_end = 0;
    hk.key_range(m0, min(Tr::kBlockM, sp.nq - m0), sp.nk, &k_begin, &k_end);
    const int first = k_begin / Tr::kBlockN;
    return {first, k_end > k_begin ? (k_end + Tr::kBlockN - 1) / Tr::kBlockN - first : 0};
  } else {
    int n_end = sp.nk;
    if (kCausal) n_end = min(n_end, m0 + Tr::kBlockM + sp.nk - sp.nq);
    return {0, n_end > 0 ? (n_end + Tr::kBlockN - 1) / Tr::kBlockN : 0};
  }
}

template <class Tr>
struct FwdHopperSmem {
  unsigned char* base;  // 1024-byte aligned
  __device__ __forceinline__ unsigned char* q() const { return base; }
  __device__ __forceinline__ unsigned char* k(int stage) const {
    return base + Tr::kQBytes + stage * Tr::kKVBytes;
  }
  __device__ __forceinline__ unsigned char* v(int stage) const {
    return base + Tr::kQBytes + (Tr::kStages + stage) * Tr::kKVBytes;
  }
  __device__ __forceinline__ FwdHopperBarriers<Tr::kStages>& bars() const {
    return *reinterpret_cast<FwdHopperBarriers<Tr::kStages>*>(base + Tr::kQBytes +
                                                              2 * Tr::kStages * Tr::kKVBytes);
  }
};

// The producer (one thread): for each tile of the CTA, post it to the consumers, then load Q
// (once the previous tile's last S has read it) and every K/V tile it sees into the stages.
// kVarlen: spans are varlen segments (p.seg); dense launches compile without any of it.
template <class Tr, bool kCausal, bool kVarlen, int kHooks>
__device__ __forceinline__ void fwd_produce(const FlashFwdParams& p, const FwdTileGrid& grid,
                                            const FwdHopperSmem<Tr>& sm, const CUtensorMap* map_q,
                                            const CUtensorMap* map_k, const CUtensorMap* map_v) {
  FwdHopperBarriers<Tr::kStages>& bars = sm.bars();
  const int group = p.shape.nheads / p.shape.nheads_k;
  int kv = 0, q_loads = 0;
  int tile = blockIdx.x;
  for (int k = 0;; ++k) {
    const int t = tile < grid.num_tiles ? tile : -1;
    bars.mailbox.post(k, t);
    if (t < 0) return;
    tile = int(gridDim.x) + atomicAdd(grid.next_tile, 1);  // in flight while this tile's loads issue
    const FwdTile ft = fwd_tile(grid, t);
    const Span sp =
        kVarlen ? span_of(p.shape, p.seg, ft.b) : Span{ft.b, 0, p.shape.seqlen_q, 0, p.shape.seqlen_k};
    const int m0 = ft.m_block * Tr::kBlockM, hk = ft.h / group;
    if (kVarlen && m0 >= sp.nq) continue;  // a segment with fewer query tiles
    const KeyTiles kt = fwd_key_tiles<Tr, kCausal, kHooks, kVarlen>(p, sp, ft, m0);
    if (kt.count == 0) continue;
    // Waits for the consumers to free `empty`, then loads `rows` rows from row0 of head `head`
    // into dst, one 64-column block at a time, completing on `full`.
    auto load = [&](auto* dst, int rows, const CUtensorMap* map, uint64_t* empty, uint64_t* full,
                    uint32_t parity, uint32_t bytes, int row0, int head) {
      mbar_wait(empty, parity);
      mbar_arrive_expect_tx(full, bytes);
#pragma unroll
      for (int cb = 0; cb < Tr::kColBlocks; ++cb)
        tma_load_4d(dst + cb * rows * 128, map, full, cb * Tr::kColBlock, row0, head, int(sp.b));
    };
    load(sm.q(), Tr::kBlockM, map_q, &bars.q_empty, &bars.q_full, (q_loads++ & 1) ^ 1, Tr::kQBytes,
         sp.q0 + m0, ft.h);
    for (int it = 0; it < kt.count; ++it, ++kv) {
      const int stage = kv % Tr::kStages, row0 = sp.k0 + (kt.first + it) * Tr::kBlockN;
      const uint32_t parity = ((kv / Tr::kStages) & 1) ^ 1;
      load(sm.k(stage), Tr::kBlockN, map_k, &bars.k_empty[stage], &bars.k_full[stage], parity, Tr::kKVBytes,
           row0, hk);
      load(sm.v(stage), Tr::kBlockN, map_v, &bars.v_empty[stage], &bars.v_full[stage], parity, Tr::kKVBytes,
           row0, hk);
    }
  }
}

template <int N>
__device__ __forceinline__ void fence_regs_u32(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

// Online softmax of one key tile's scores (in place, scores -> probabilities): the new running
// row max, the row sums rescaled, and the factor `corr` that O must be rescaled by.
template <int kST>
__device__ __forceinline__ void hopper_softmax(float (&s)[kST][4], float (&row_max)[2], float (&row_sum)[2],
                                               float (&corr)[2], float scale_log2) {
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float mx = row_max[hi];
#pragma unroll
    for (int nt = 0; nt < kST; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * hi], s[nt][2 * hi + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // a row lives in the 4 lanes of a quad
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row that has seen no key yet keeps max -inf: 0 as reference makes its probabilities
    // exp2(-inf) = 0 rather than NaN.
    const float ref = mx == -INFINITY ? 0.f : mx * scale_log2;
    corr[hi] = fast_exp2(row_max[hi] * scale_log2 - ref);
    row_max[hi] = mx;
    float sum = row_sum[hi] * corr[hi];
#pragma unroll
    for (int nt = 0; nt < kST; ++nt)
#pragma unroll
      for (int e = 2 * hi; e < 2 * hi + 2; ++e) {
        const float pr = fast_exp2(fmaf(s[nt][e], scale_log2, -ref));
        sum += pr;
        s[nt][e] = pr;
      }
    row_sum[hi] = sum;
  }
}

// A consumer warpgroup (wg 0 or 1: rows 64 wg .. 64 wg + 63 of every tile) over the CTA's tiles.
template <class Tr, typename T, bool kCausal, bool kVarlen, int kHooks>
__device__ __forceinline__ void fwd_consume(const FlashFwdParams& p, const FwdTileGrid& grid,
                                            const FwdHopperSmem<Tr>& sm, int wg) {
  using Mma = MmaType<T>;
  constexpr int kST = Tr::kSTiles, kOT = Tr::kOTiles, kN = Tr::kBlockN;
  constexpr int kTurnBarrier = 1;            // named barriers 1 and 2: consumer 0's and 1's turn
  constexpr int kPair = 2 * Tr::kWgThreads;  // both consumers take part in each
  FwdHopperBarriers<Tr::kStages>& bars = sm.bars();
  const int lane = threadIdx.x % kWarpSize, g = lane / 4, t = lane % 4;
  const int r0 = wg * 64 + (threadIdx.x / kWarpSize % 4) * kMmaM;  // this warp's first row in the tile
  const float scale_log2 = p.shape.softmax_scale * kLog2e;

  // Descriptors (flash_wgmma.cuh), in 16-byte units. K-major Q and K: k-step kk is 32 bytes along
  // a 128-byte row, the next 64-column block a whole block of rows further. MN-major V: a k-step
  // is 16 keys = 2048 bytes, the 64-column blocks of head_dim kN * 128 bytes apart.
  const uint64_t desc_q = gmma_desc(smem_u32(sm.q()) + wg * 64 * 128, 16);
  const uint64_t desc_k = gmma_desc(smem_u32(sm.k(0)), 16), desc_v = gmma_desc(smem_u32(sm.v(0)), kN * 128);
  constexpr uint32_t kStageStep = Tr::kKVBytes >> 4;
  auto koff = [](int kk, int rows) { return uint32_t(((kk / 4) * rows * 128 + (kk % 4) * 32) >> 4); };
  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };
  auto turn_begin = [&] { named_sync(kTurnBarrier + wg, kPair); };
  auto turn_end = [&] { named_arrive(kTurnBarrier + 1 - wg, kPair); };

  float acc_o[kOT][4];
  float(&o)[kOT * 4] = reinterpret_cast<float(&)[kOT * 4]>(acc_o);
  float s[kST][4];
  float(&sf)[kST * 4] = reinterpret_cast<float(&)[kST * 4]>(s);
  uint32_t pa[Tr::kPVSteps][4];
  auto issue_s = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < Tr::kQKSteps; ++kk)
      wgmma_ss<T, kN, 0, 0>(sf, desc_q + koff(kk, Tr::kBlockM), desc_k + stage * kStageStep + koff(kk, kN),
                            kk);
    wgmma_commit();
  };
  auto issue_pv = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < Tr::kPVSteps; ++kk)
      wgmma_rs<T, Tr::kHeadDim, 1>(o, pa[kk], desc_v + stage * kStageStep + kk * 128, 1);
    wgmma_commit();
  };
  // P as 16-bit A fragments: k-step kk = keys 16kk..16kk+15 = n-tiles 2kk, 2kk+1.
  auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < Tr::kPVSteps; ++kk) {
      pa[kk][0] = Mma::pack(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = Mma::pack(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = Mma::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = Mma::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
  };

  if (wg == 1) named_arrive(kTurnBarrier, kPair);  // consumer 0 takes the first turn
  int kv = 0, q_loads = 0;
  for (int k = 0;; ++k) {
    const int tile = bars.mailbox.take(k);
    if (tile < 0) break;
    const FwdTile ft = fwd_tile(grid, tile);
    const Span sp =
        kVarlen ? span_of(p.shape, p.seg, ft.b) : Span{ft.b, 0, p.shape.seqlen_q, 0, p.shape.seqlen_k};
    const int m0 = ft.m_block * Tr::kBlockM, diag = sp.nk - sp.nq;
    if (kVarlen && m0 >= sp.nq) continue;  // a segment with fewer query tiles: no rows, no turns
    const KeyTiles kt = fwd_key_tiles<Tr, kCausal, kHooks, kVarlen>(p, sp, ft, m0);
    const int n_tiles = kt.count, n_end = (kt.first + n_tiles) * kN;
    [[maybe_unused]] const SpanHooks hk =
        kHooks != kNoHooks ? span_hooks(p.mods, p.shape, sp, ft.b, ft.h, kVarlen) : SpanHooks{};
    // The hooks' inputs of this thread's two rows: their positions (rows past the span read its
    // last one; they are never stored), and whether scores change (softcap, ALiBi).
    [[maybe_unused]] int qp[2] = {0, 0};
    if constexpr (kHooks != kNoHooks)
#pragma unroll
      for (int half = 0; half < 2; ++half) qp[half] = hk.qpos(min(m0 + r0 + g + half * 8, sp.nq - 1));
    [[maybe_unused]] const bool scored = kHooks == kScoreHooks && (hk.softcap > 0.f || hk.slope != 0.f);
    // Varlen: the last key tile's TMA box runs past the segment into rows of the packed tensor
    // that may hold anything, NaN too, and P = 0 there does not cancel a NaN in P V. Consumer 1
    // zeroes those V rows while it holds its turn on that tile, which ends before either consumer
    // issues that tile's P V (dense boxes stop at the tensor's end, where TMA fills zeros).
    const int v_tail = kVarlen && n_end > sp.nk ? sp.nk - (n_end - kN) : kN;
    auto zero_v_tail = [&](int it) {
      if constexpr (kVarlen) {
        if (wg != 1 || it != n_tiles - 1 || v_tail == kN) return;
        const int j = kv + it, stage = j % Tr::kStages;
        mbar_wait(&bars.v_full[stage], (j / Tr::kStages) & 1);
        zero_tile_rows<Tr::kColBlocks>(sm.v(stage), kN, v_tail, threadIdx.x % Tr::kWgThreads, Tr::kWgThreads);
        fence_proxy_async();  // the zeros, before the turn's end, are visible to the tensor cores
      }
    };
#pragma unroll
    for (int i = 0; i < kOT * 4; ++i) o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.f, 0.f}, corr[2];
    // Softcap and ALiBi (SpanHooks::score) over one tile of raw scores, before its mask: the
    // options' tests are uniform and sit outside the element loops, which are then a multiply, a
    // tanh and a multiply (softcap) and one FFMA (ALiBi) per score.
    [[maybe_unused]] auto score_tile = [&](int n0) {
      if (hk.softcap > 0.f) {
        const float a = hk.scale * hk.inv_softcap, b = hk.softcap * hk.inv_scale;
#pragma unroll
        for (int nt = 0; nt < kST; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] = b * tanhf(a * s[nt][e]);
      }
      if (hk.slope == 0.f) return;
      const float c = hk.slope * hk.inv_scale;
      auto bias = [&](auto kpos_of) {
#pragma unroll
        for (int nt = 0; nt < kST; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const float kp = float(kpos_of(min(n0 + nt * kMmaN + 2 * t + (e & 1), sp.nk - 1)));
            s[nt][e] += hk.alibi_causal ? c * kp : -c * fabsf(float(qp[e >> 1] + hk.diag) - kp);
          }
      };
      if (hk.k_pos)
        bias([&](int j) { return hk.k_pos[j]; });
      else
        bias([](int j) { return j; });
    };
    // Scores of keys past the span and (causal) right of a row's diagonal become -inf; only the
    // tiles that cross the span end or the diagonal of this warpgroup's first row need it.
    auto mask = [&](int it) {
      const int n0 = (kt.first + it) * kN;
      if constexpr (kHooks != kNoHooks) {
        // Softcap and ALiBi on every tile; keys outside a row's window -inf, unless this
        // warpgroup's rows see the whole tile.
        const int lo = m0 + wg * 64, hi = min(lo + 63, sp.nq - 1), key_hi = n0 + kN - 1;
        if (lo > hi) return;  // rows past the span are never stored
        if constexpr (kHooks == kScoreHooks)
          if (scored) score_tile(n0);
        if (key_hi < sp.nk && hk.sees_whole(lo, hi, n0, key_hi)) return;
#pragma unroll
        for (int nt = 0; nt < kST; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = n0 + nt * kMmaN + 2 * t + (e & 1);
            if (key >= sp.nk || !hk.visible(qp[e >> 1], hk.kpos(key))) s[nt][e] = -INFINITY;
          }
        return;
      }
      if (!(n0 + kN > sp.nk || (kCausal && n0 + kN - 1 > m0 + wg * 64 + diag))) return;
#pragma unroll
      for (int nt = 0; nt < kST; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = m0 + r0 + g + (e >> 1) * 8, key = n0 + nt * kMmaN + 2 * t + (e & 1);
          if (key >= sp.nk || (kCausal && key > row + diag)) s[nt][e] = -INFINITY;
        }
    };
    // Dropout on the probabilities that multiply V, after the softmax (its row sums keep them
    // all, as flash-attn's do). Keys 2t and 2t + 1 of an n-tile are neighbours: one Philox draw.
    // With local key positions (aligned to the draws' blocks of four), lanes t and t ^ 1 hold the
    // two halves of one block in both of their rows: each draws for one row and hands the other
    // lane the two words it needs, one draw per n-tile instead of two.
    auto drop = [&](int it) {
      if constexpr (kHooks == kScoreHooks) {
        if (!hk.dropout) return;
        const int n0 = (kt.first + it) * kN;
        if (!hk.k_pos && (hk.k_tok0 & 3) == 0) {
          const int mine = t & 1;  // the row half this lane draws for; lane ^ 1 draws the other
#pragma unroll
          for (int nt = 0; nt < kST; ++nt) {
            const int key = n0 + nt * kMmaN + 2 * t;
            const Philox4 r = hk.draw4(qp[mine], key);
            const uint32_t own0 = mine ? r.z : r.x, own1 = mine ? r.w : r.y;
            const uint32_t got0 = __shfl_xor_sync(0xffffffffu, mine ? r.x : r.z, 1);
            const uint32_t got1 = __shfl_xor_sync(0xffffffffu, mine ? r.y : r.w, 1);
            if (key >= sp.nk) continue;  // probabilities past the span are 0 already
            s[nt][2 * mine] *= hk.keep_factor(own0);
            s[nt][2 * mine + 1] *= hk.keep_factor(own1);
            s[nt][2 - 2 * mine] *= hk.keep_factor(got0);
            s[nt][3 - 2 * mine] *= hk.keep_factor(got1);
          }
          return;
        }
#pragma unroll
        for (int nt = 0; nt < kST; ++nt) {
          const int key = n0 + nt * kMmaN + 2 * t;
          if (key >= sp.nk) continue;  // probabilities past the span are 0 already
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            float z0, z1;
            hk.keep2(qp[half], hk.kpos(key), hk.kpos(min(key + 1, sp.nk - 1)), &z0, &z1);
            s[nt][2 * half] *= z0;
            s[nt][2 * half + 1] *= z1;
          }
        }
      }
    };
    if (n_tiles > 0) {
      mbar_wait(&bars.q_full, q_loads++ & 1);
      const int st0 = kv % Tr::kStages;
      mbar_wait(&bars.k_full[st0], (kv / Tr::kStages) & 1);
      turn_begin();
      wgmma_fence();
      issue_s(st0);
      zero_v_tail(0);
      turn_end();
      wgmma_wait<0>();
      fence_regs(sf);
      release(&bars.k_empty[st0]);
      if (n_tiles == 1) release(&bars.q_empty);
      mask(0);
      hopper_softmax<kST>(s, row_max, row_sum, corr, scale_log2);
      drop(0);
      pack_p();
      for (int it = 1; it < n_tiles; ++it) {
        const int j = kv + it, st = j % Tr::kStages, st_prev = (j - 1) % Tr::kStages;
        mbar_wait(&bars.k_full[st], (j / Tr::kStages) & 1);
        mbar_wait(&bars.v_full[st_prev], ((j - 1) / Tr::kStages) & 1);
        turn_begin();
        wgmma_fence();
        issue_s(st);
        issue_pv(st_prev);
        zero_v_tail(it);
        turn_end();
        wgmma_wait<1>();  // S_it; P_{it-1} V_{it-1} may still run
        fence_regs(sf);
        release(&bars.k_empty[st]);
        if (it == n_tiles - 1) release(&bars.q_empty);
        mask(it);
        hopper_softmax<kST>(s, row_max, row_sum, corr, scale_log2);
        drop(it);
        wgmma_wait<0>();
        fence_regs(o);
        fence_regs_u32(pa);
        release(&bars.v_empty[st_prev]);
#pragma unroll
        for (int dt = 0; dt < kOT; ++dt) {
          acc_o[dt][0] *= corr[0], acc_o[dt][1] *= corr[0];
          acc_o[dt][2] *= corr[1], acc_o[dt][3] *= corr[1];
        }
        pack_p();
      }
      const int last = (kv + n_tiles - 1) % Tr::kStages;
      mbar_wait(&bars.v_full[last], ((kv + n_tiles - 1) / Tr::kStages) & 1);
      turn_begin();
      wgmma_fence();
      issue_pv(last);
      turn_end();
      wgmma_wait<0>();
      fence_regs(o);
      release(&bars.v_empty[last]);
      kv += n_tiles;
    }
    store_warp_rows<kOT, T>(out_sink(p, sp, m0, ft.h), p.shape.softmax_scale, min(Tr::kBlockM, sp.nq - m0),
                            r0, acc_o, row_max, row_sum);
  }
  if (wg == 0) named_sync(kTurnBarrier, kPair);  // the turn consumer 1 passed on after its last
}

}  // namespace rfa::cuda
