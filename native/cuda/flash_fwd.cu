// Forward attention, FlashAttention-2 style on the tensor cores with fp32 accumulation: out =
// softmax(scale * q k^T) v, and lse (natural log) per query row. Two kernels share everything but
// the main loop: head_dim 128 on sm_90a runs on Hopper warpgroup MMAs (attend_tile_wgmma,
// FwdWgTraits: one warpgroup per 64-row tile), everything else on mma.sync m16n8k16
// (attend_tile, FwdTraits: 4 warps per 128-row tile).
//
// One CTA per (query tile, head, batch entry or varlen segment). Q stays in shared memory for the
// whole CTA; K and V tiles stream through it, loaded while the previous tile computes. Scores,
// probabilities and the output accumulator never leave registers. The online softmax runs in the
// log2 domain: p = exp2(s * scale_log2 - m * scale_log2) with m the running row max of the raw
// scores, so one FFMA + one MUFU.EX2 per score.
//
// A ring step merges its block into the running (out, lse) in the epilogue (p.merge), and may
// write the merged rows to a 16-bit final out (p.merge_src). Grids that would fill the GPU
// unevenly cut query tiles into pieces of their keys (FwdGrid, plan_fwd, launch_plan.h).
//
// Residency: the wgmma kernel is built for 3 CTAs per SM (K single, V double buffered) and 2
// (K double, V triple buffered), and the launch model picks per grid (FwdWgTraits); the mma.sync
// kernel runs 2 per SM. FLOP counted for timings: causal 2*b*h*s^2*d, full 4*b*h*s^2*d. Each
// version's timings, and the variants tried (stream-K; FA3's intra-warpgroup overlap, ping-pong,
// 128-key tiles, Q in registers): benchmark/RESULTS.md.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <vector>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/flash_wgmma.cuh"
#include "cuda/score_hooks.cuh"
#include "cuda/fwd/epilogue.cuh"
#include "cuda/fwd/launch.h"
#include "launch_plan.h"

namespace rfa::cuda {
namespace {

// One CTA per query tile (of kBlockM rows, head, batch entry or varlen segment), heaviest tiles
// first; or, when that grid fills the GPU unevenly (few heads: the Python project's h=5 and the
// zigzag ring's half blocks; heavy causal tiles; dense batches only), the first `whole` tiles in
// that order keep a CTA each and every later tile is cut into `splits` pieces of its key tiles,
// one CTA each. A piece writes a partial (out, lse); the last piece of a tile to finish (arrivals
// counted per tile) merges them all, so there is no combine pass and no CTA waits for another.
constexpr int kMaxSplits = 8;

struct FwdGrid {
  int num_m_blocks;  // query tiles per (head, span)
  int num_spans;     // batch entries, or varlen segments
  float scale_log2;  // softmax_scale * log2(e)
  int whole;         // tiles with a CTA of their own (all of them when splits == 1)
  int splits;        // pieces per later tile
  float* part_out;   // partials of piece k of later tile i at slot (i - whole) * splits + k:
  float* part_lse;   //   [slot][kBlockM][head_dim] and [slot][kBlockM]
  int* arrivals;     // per later tile: pieces finished (zeroed before the launch)
};

// Key tiles that the query tile from row m0 of a span (nq queries, nk keys) may see: all of them,
// or (causal) up to its diagonal. The kernel and the launch plan both count with it.
template <class Tr>
__host__ __device__ __forceinline__ int key_tiles(int nq, int nk, int m0, bool causal) {
  int n_end = nk;
  if (causal) {
    const int diagonal_end = m0 + Tr::kBlockM + nk - nq;
    n_end = n_end < diagonal_end ? n_end : diagonal_end;
  }
  return n_end > 0 ? (n_end + Tr::kBlockN - 1) / Tr::kBlockN : 0;
}

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

template <class Tr>
__device__ __forceinline__ OutSite part_site(const FwdGrid& grid, int slot) {
  return OutSite{grid.part_out + int64_t(slot) * Tr::kBlockM * Tr::kHeadDim, Tr::kHeadDim, false,
                 grid.part_lse + int64_t(slot) * Tr::kBlockM, 1};
}

// A CTA's work: query tile (m_block, j) in heavy-first order, whole (piece < 0: the result is
// final, merged into out/lse with p.merge) or its piece `piece` of grid.splits (a partial at
// slot blockIdx.x - grid.whole). Computed from blockIdx wherever it is needed, which the
// compiler recomputes rather than keeps in a register through the main loop (which needs them all).
struct TileJob {
  int m_block, j, piece;
};

__device__ __forceinline__ TileJob tile_job(const FwdGrid& grid, int heads) {
  const int H = heads * grid.num_spans, b = int(blockIdx.x);
  const int tile = b < grid.whole ? b : grid.whole + (b - grid.whole) / grid.splits;
  return TileJob{grid.num_m_blocks - 1 - tile / H, tile % H,
                 b < grid.whole ? -1 : (b - grid.whole) % grid.splits};
}

template <class Tr, typename T>
__device__ __forceinline__ void attend_epilogue(const FlashFwdParams& p, const FwdGrid& grid,
                                                const TileJob& job,
                                                const float (&acc_o)[Tr::kMTilesPerWarp][Tr::kOTiles][4],
                                                const float (&row_max)[Tr::kMTilesPerWarp][2],
                                                const float (&row_sum)[Tr::kMTilesPerWarp][2]) {
  constexpr int kMT = Tr::kMTilesPerWarp, kOT = Tr::kOTiles;
  const int heads = p.shape.nheads, slot = job.piece < 0 ? -1 : int(blockIdx.x) - grid.whole;
  const Span sp = span_of(p.shape, p.seg, job.j / heads);
  const int m0 = job.m_block * Tr::kBlockM, rows_valid = min(Tr::kBlockM, sp.nq - m0);
  const int warp_row0 = threadIdx.x / kWarpSize * Tr::kRowsPerWarp;
  // A piece of a split tile goes to its partial-result slot, merged later by the combine kernel.
  const RowsSink sink = slot < 0 ? out_sink(p, sp, m0, job.j % heads)
                                 : RowsSink{part_site<Tr>(grid, slot), RunningOut{nullptr, 0}, false, false};
  float lse_old[kMT][2];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) read_lse_old(sink, rows_valid, warp_row0 + mt * kMmaM, lse_old[mt]);
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
    store_rows<kOT, T>(sink, p.shape.softmax_scale, rows_valid, warp_row0 + mt * kMmaM, lse_old[mt],
                       acc_o[mt], row_max[mt], row_sum[mt]);
}

// What a CTA's tile job covers: query head h (kv head hk) of span sp, query rows [m0, m0 +
// rows_valid), and the key tiles [it_begin, it_end) of its piece (all it sees when whole).
struct TileRows {
  Span sp;
  int h, hk, m0, rows_valid;
  int diag;  // causal (bottom-right): row i sees key j iff j <= i + diag
  int it_begin, it_end;
};

template <class Tr, bool kCausal, bool kHooks = false>
__device__ __forceinline__ TileRows tile_rows(const FlashFwdParams& p, const FwdGrid& grid,
                                              const TileJob& job) {
  const int heads = p.shape.nheads;
  TileRows tr;
  tr.h = job.j % heads;
  tr.sp = span_of(p.shape, p.seg, job.j / heads);
  tr.m0 = job.m_block * Tr::kBlockM;
  tr.hk = tr.h / (heads / p.shape.nheads_k);
  tr.rows_valid = min(Tr::kBlockM, tr.sp.nq - tr.m0);
  tr.diag = tr.sp.nk - tr.sp.nq;
  tr.it_begin = 0, tr.it_end = key_tiles<Tr>(tr.sp.nq, tr.sp.nk, tr.m0, kCausal);
  if constexpr (kHooks) {  // only the key tiles that some row's window reaches
    const SpanHooks hk = span_hooks(p.mods, p.shape, tr.sp, job.j / heads, tr.h, p.seg.num_seqs > 0);
    int k_begin = 0, k_end = 0;
    if (tr.rows_valid > 0) hk.key_range(tr.m0, tr.rows_valid, tr.sp.nk, &k_begin, &k_end);
    tr.it_begin = k_begin / Tr::kBlockN;
    tr.it_end = k_end > k_begin ? (k_end + Tr::kBlockN - 1) / Tr::kBlockN : tr.it_begin;
  }
  if (job.piece >= 0) {
    const int first = tr.it_begin, per = (tr.it_end - first + grid.splits - 1) / grid.splits;
    tr.it_begin = min(tr.it_end, first + job.piece * per);
    tr.it_end = min(tr.it_end, tr.it_begin + per);
  }
  return tr;
}

// A tile (or piece) no row of which sees a key: out = 0, lse = -inf; merged, that adds nothing to
// the running result, which is kept (copied when out is elsewhere).
template <class Tr, typename T>
__device__ void write_keyless_tile(const FlashFwdParams& p, const FwdGrid& grid, const TileJob& job,
                                   const TileRows& tr) {
  const OutSite o =
      job.piece < 0 ? out_site(p, tr.sp, tr.m0, tr.h) : part_site<Tr>(grid, int(blockIdx.x) - grid.whole);
  if (job.piece < 0 && p.merge) {
    if (in_place(p)) return;
    const RunningOut prev = running_out(p, tr.sp, tr.m0, tr.h);
    for (int i = threadIdx.x; i < tr.rows_valid * Tr::kHeadDim / 2; i += Tr::kThreads) {
      const int r = i / (Tr::kHeadDim / 2), c = i % (Tr::kHeadDim / 2) * 2;
      const float2 x = prev.load2(r, c);
      o.store(r, c, x.x, x.y, MmaType<T>::pack(x.x, x.y), 2);
    }
    return;
  }
  for (int i = threadIdx.x; i < tr.rows_valid * Tr::kHeadDim; i += Tr::kThreads)
    o.store(i / Tr::kHeadDim, i % Tr::kHeadDim, 0.f, 0.f, 0u, 1);
  for (int r = threadIdx.x; r < tr.rows_valid; r += Tr::kThreads) o.lse[int64_t(r) * o.lse_row] = -INFINITY;
}

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

// attend_tile on Hopper warpgroup MMAs (FwdWgTraits: head_dim 128, sm_90a; the body is empty in
// other builds, which never launch it). Same job, masks, online softmax and epilogue; per step:
// S = Q K^T (8 x m64n64k16, Q and K from swizzled shared tiles), softmax in registers, O += P V
// (4 x m64n128k16, P from registers, V MN-major), left in flight into the next step.
template <class Tr, typename T, bool kCausal>
__device__ __forceinline__ void attend_tile_wgmma(const FlashFwdParams& p, const FwdGrid& grid,
                                                  const TileJob& job) {
#ifdef RFA_WGMMA_ENABLED
  using Mma = MmaType<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* base = smem + ((1024 - (smem_u32(smem) & 1023)) & 1023);  // swizzle atoms: 1024-aligned
  T* sQ = reinterpret_cast<T*>(base);     // [2][64][64] swizzled, as every tile below
  T* sK = sQ + Tr::kTile;                 // [kKStages] tiles
  T* sV = sK + Tr::kKStages * Tr::kTile;  // [kVStages] tiles

  const TileRows tr = tile_rows<Tr, kCausal>(p, grid, job);
  if (tr.m0 >= tr.sp.nq) return;
  if (tr.it_begin == tr.it_end) return write_keyless_tile<Tr, T>(p, grid, job, tr);
  const Span& sp = tr.sp;
  const T* gK = bsh_ptr<T>(p.k, p.k_stride, sp.b, sp.k0, tr.hk);
  const T* gV = bsh_ptr<T>(p.v, p.v_stride, sp.b, sp.k0, tr.hk);
  auto load_kv = [&](int it, int i) {  // key tile `it`, the i-th of this CTA, into its stages
    const int n0 = it * Tr::kBlockN;
    load_tile_sw128<Tr::kBlockN, Tr::kThreads>(sK + (i % Tr::kKStages) * Tr::kTile,
                                               gK + int64_t(n0) * p.k_stride.row, p.k_stride.row, sp.nk - n0);
    load_tile_sw128<Tr::kBlockN, Tr::kThreads>(sV + (i % Tr::kVStages) * Tr::kTile,
                                               gV + int64_t(n0) * p.v_stride.row, p.v_stride.row, sp.nk - n0);
  };
  load_tile_sw128<Tr::kBlockM, Tr::kThreads>(sQ, bsh_ptr<T>(p.q, p.q_stride, sp.b, sp.q0 + tr.m0, tr.h),
                                             p.q_stride.row, tr.rows_valid);
  load_kv(tr.it_begin, 0);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, t = lane % 4;
  // Descriptors (flash_wgmma.cuh). K-major Q and K: k-step kk is 32 bytes along a 128-byte row,
  // the second 64-column half after four. MN-major V: a k-step is 16 keys = 2048 bytes, the two
  // 64-column halves of head_dim 8192 bytes apart. Offsets are in the descriptor's 16-byte units.
  const uint64_t dQ = gmma_desc(smem_u32(sQ), 16), dK = gmma_desc(smem_u32(sK), 16);
  const uint64_t dV = gmma_desc(smem_u32(sV), Tr::kBlockN * 128);
  constexpr uint32_t kTileStep = Tr::kTile * 2 / 16;
  auto koff = [](int kk) { return uint32_t(((kk / 4) * 64 * 128 + (kk % 4) * 32) >> 4); };

  // In the mma C layout (flash_wgmma.cuh): acc_o[0][dt][e] is the accumulator's d[4 dt + e].
  float acc_o[1][Tr::kOTiles][4];
  float row_max[1][2] = {{-INFINITY, -INFINITY}}, row_sum[1][2] = {{0.f, 0.f}};
#pragma unroll
  for (int dt = 0; dt < Tr::kOTiles; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_o[0][dt][e] = 0.f;
  float(&o)[64] = reinterpret_cast<float(&)[64]>(acc_o);

  // Loads of tiles i+1 go where the tiles they replace are done with: K stage (i+1) % kKStages was
  // last read by S_{i+1-kKStages}, V stage (i+1) % kVStages by P_{i+1-kVStages} V.
  constexpr bool kLoadAtTop = Tr::kKStages == 2;  // S_{i-1} and P_{i-2} V are done at the top of step i
  for (int it = tr.it_begin, i = 0; it < tr.it_end; ++it, ++i) {
    const int n0 = it * Tr::kBlockN;
    cp_async_wait<0>();
    fence_proxy_async();  // cp.async data -> wgmma (async proxy) reads
    __syncthreads();      // tiles i landed; every warp is past step i-1's wait
    if constexpr (kLoadAtTop) {
      if (it + 1 < tr.it_end) load_kv(it + 1, i + 1);
      cp_async_commit();
    }

    float s[1][Tr::kSTiles][4];
    float(&sf)[32] = reinterpret_cast<float(&)[32]>(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<T, 64, 0, 0>(sf, dQ + koff(kk), dK + (i % Tr::kKStages) * kTileStep + koff(kk), kk);
    wgmma_commit();
    wgmma_wait<0>();  // S, and the previous step's P V (the softmax rescales its accumulator)
    fence_regs(sf);
    fence_regs(o);
    if constexpr (!kLoadAtTop) {
      __syncthreads();  // every warp is past this wait: S_i and P_{i-1} V are done
      if (it + 1 < tr.it_end) load_kv(it + 1, i + 1);
      cp_async_commit();
    }

    const bool needs_mask = n0 + Tr::kBlockN > sp.nk || (kCausal && n0 + Tr::kBlockN - 1 > tr.m0 + tr.diag);
    if (needs_mask)
      mask_scores<Tr, kCausal>(s, tr.m0 + warp * Tr::kRowsPerWarp + g, n0 + 2 * t, sp.nk, tr.diag);
    online_softmax<Tr>(s, acc_o, row_max, row_sum, grid.scale_log2);

    // P as 16-bit A fragments: k-step kk = keys 16kk..16kk+15 = n-tiles 2kk, 2kk+1.
    uint32_t pa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[kk][0] = Mma::pack(s[0][2 * kk][0], s[0][2 * kk][1]);
      pa[kk][1] = Mma::pack(s[0][2 * kk][2], s[0][2 * kk][3]);
      pa[kk][2] = Mma::pack(s[0][2 * kk + 1][0], s[0][2 * kk + 1][1]);
      pa[kk][3] = Mma::pack(s[0][2 * kk + 1][2], s[0][2 * kk + 1][3]);
    }
    wgmma_fence();  // the softmax rewrote the accumulator
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<T, 128, 1>(o, pa[kk], dV + (i % Tr::kVStages) * kTileStep + kk * 128, 1);
    wgmma_commit();
  }
  wgmma_wait<0>();
  fence_regs(o);
  cp_async_wait<0>();  // nothing may still be landing in shared memory when the CTA exits
  attend_epilogue<Tr, T>(p, grid, job, acc_o, row_max, row_sum);
#endif
}

// The last piece of a split tile to finish merges every piece's partial: lse = log sum_k
// exp(lse_k), out = sum_k exp(lse_k - lse) out_k, then the final write (merged into the running
// out/lse with p.merge). First one thread per row works out the row's weights (into shared
// memory, free now), then all threads stream the partials through L2 (other SMs wrote them)
// four columns at a time, so the merge is bound by bandwidth rather than by load latency.
template <class Tr, typename T>
__device__ void merge_pieces(const FlashFwdParams& p, const FwdGrid& grid, const TileJob& job) {
  static_assert(Tr::kThreads >= Tr::kBlockM, "one thread per row works out the weights");
  extern __shared__ __align__(16) unsigned char smem[];
  float* piece_w = reinterpret_cast<float*>(smem);  // [kMaxSplits][kBlockM]: exp(lse_k - lse)
  float* new_w =
      piece_w + kMaxSplits * Tr::kBlockM;  // [kBlockM]: weight of the merged block (0: row untouched)
  float* old_w = new_w + Tr::kBlockM;      // [kBlockM]: weight of the running out
  const int heads = p.shape.nheads, h = job.j % heads;
  const Span sp = span_of(p.shape, p.seg, job.j / heads);
  const int m0 = job.m_block * Tr::kBlockM, rows_valid = min(Tr::kBlockM, sp.nq - m0);
  const int first = int(blockIdx.x) - grid.whole - job.piece;  // the tile's slots: first + [0, splits)
  const OutSite o = out_site(p, sp, m0, h);
  const int r = threadIdx.x;
  if (r < rows_valid) {
    float l[kMaxSplits];  // all of the row's piece lse at once: one round of L2 latency
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < kMaxSplits; ++k) {
      l[k] = k < grid.splits ? __ldcg(part_site<Tr>(grid, first + k).lse + r) : -INFINITY;
      mx = fmaxf(mx, l[k]);
    }
    float lse = -INFINITY;
    if (mx != -INFINITY) {
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < kMaxSplits; ++k) sum += k < grid.splits ? expf(l[k] - mx) : 0.f;
      lse = mx + logf(sum);
    }
#pragma unroll
    for (int k = 0; k < kMaxSplits; ++k)
      piece_w[k * Tr::kBlockM + r] = lse == -INFINITY ? 0.f : expf(l[k] - lse);
    MergeWeights w{0.f, 1.f, lse};
    if (p.merge) {  // no piece saw a key: the row keeps its running values
      const float lse_old = o.lse[int64_t(r) * o.lse_row];
      w = lse == -INFINITY ? MergeWeights{1.f, 0.f, lse_old} : merge_weights(lse_old, lse);
    }
    new_w[r] = w.new_w;
    old_w[r] = w.old_w;
    o.lse[int64_t(r) * o.lse_row] = w.lse;
  }
  __syncthreads();
  // Every thread owns kPer fixed groups of four columns and loads each piece's groups all at
  // once, so many loads are in flight per thread (four warps alone would be latency bound).
  constexpr int kQuads = Tr::kHeadDim / 4, kPer = Tr::kBlockM * kQuads / Tr::kThreads;
  float4 acc[kPer];
#pragma unroll
  for (int e = 0; e < kPer; ++e) acc[e] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k = 0; k < grid.splits; ++k) {
    const float* part = static_cast<const float*>(part_site<Tr>(grid, first + k).out);
#pragma unroll
    for (int e = 0; e < kPer; ++e) {
      const int i = e * Tr::kThreads + threadIdx.x, row = i / kQuads;
      if (row >= rows_valid) continue;
      const float wk = piece_w[k * Tr::kBlockM + row];
      const float4 x = __ldcg(reinterpret_cast<const float4*>(part + int64_t(i) * 4));
      acc[e].x = fmaf(wk, x.x, acc[e].x), acc[e].y = fmaf(wk, x.y, acc[e].y);
      acc[e].z = fmaf(wk, x.z, acc[e].z), acc[e].w = fmaf(wk, x.w, acc[e].w);
    }
  }
  // Running values in batches of kBatch groups, loaded before the batch's stores (in place, a
  // store may alias a later load: interleaved, each load would wait out a memory latency).
  constexpr int kBatch = kPer < 8 ? kPer : 8;
  const RunningOut running = p.merge ? running_out(p, sp, m0, h) : RunningOut{nullptr, 0};
#pragma unroll
  for (int e0 = 0; e0 < kPer; e0 += kBatch) {
    float4 prev[kBatch];
#pragma unroll
    for (int e = e0; e < e0 + kBatch; ++e) {
      const int i = e * Tr::kThreads + threadIdx.x, row = i / kQuads, c = i % kQuads * 4;
      const bool load = row < rows_valid && old_w[row] != 0.f;
      const float2 a = load ? running.load2(row, c) : make_float2(0.f, 0.f),
                   b = load ? running.load2(row, c + 2) : make_float2(0.f, 0.f);
      prev[e - e0] = make_float4(a.x, a.y, b.x, b.y);
    }
#pragma unroll
    for (int e = e0; e < e0 + kBatch; ++e) {
      const int i = e * Tr::kThreads + threadIdx.x, row = i / kQuads, c = i % kQuads * 4;
      if (row >= rows_valid) continue;
      const float nw = new_w[row], ow = old_w[row];
      if (p.merge && nw == 0.f && in_place(p)) continue;  // the row keeps its running values, in place
      const float4 x = prev[e - e0];
      const float y0 = fmaf(ow, x.x, acc[e].x * nw), y1 = fmaf(ow, x.y, acc[e].y * nw);
      const float y2 = fmaf(ow, x.z, acc[e].z * nw), y3 = fmaf(ow, x.w, acc[e].w * nw);
      o.store(row, c, y0, y1, MmaType<T>::pack(y0, y1), 2);
      o.store(row, c + 2, y2, y3, MmaType<T>::pack(y2, y3), 2);
    }
  }
}

// kHooks: the instance with the score hooks (mma.sync tiles only); the plain ones never pay for them.
template <class Tr, typename T, bool kCausal, bool kHooks = false>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kCtasPerSm)
    flash_fwd_kernel(const FlashFwdParams p, const FwdGrid grid) {
  static_assert(!(kHooks && Tr::kWgmma), "the hooks are in the mma.sync tiles only");
  if constexpr (Tr::kWgmma)
    attend_tile_wgmma<Tr, T, kCausal>(p, grid, tile_job(grid, p.shape.nheads));
  else
    attend_tile<Tr, T, kCausal, kHooks>(p, grid, tile_job(grid, p.shape.nheads));
  if (int(blockIdx.x) < grid.whole) return;
  // A piece: count it in, and the last of its tile merges them all.
  __shared__ bool last_piece;
  __threadfence();  // this piece's partial is visible before its arrival is counted
  __syncthreads();
  if (threadIdx.x == 0)
    last_piece =
        atomicAdd(&grid.arrivals[(int(blockIdx.x) - grid.whole) / grid.splits], 1) == grid.splits - 1;
  __syncthreads();
  if (!last_piece) return;
  __threadfence();
  merge_pieces<Tr, T>(p, grid, tile_job(grid, p.shape.nheads));
}

// The wgmma kernel exists as sm_90a machine code only: other devices (and the compute_90 PTX
// fallback, where its body is empty) take the mma.sync kernel.
bool use_wgmma_fwd(const LaunchOverrides& o) { return o.fwd_kernel != 0 && current_device().sm90; }

// How to launch a call (FwdGrid's `whole` and `splits`, and the wgmma kernel's CTAs per SM; see
// launch_plan.h), for a kernel with the tile shape of Tr that can run at `residencies`. Dense
// grids of under 16 tiles per SM are planned by the launch model; varlen calls and larger grids
// run one CTA per tile, three per SM where the kernel can and the grid fills a wave of them.
// Plans are cached per shape and thread (the simulation is too slow to run for every ring step).
template <class Tr>
FwdPlan plan_fwd(const AttnShape& sh, int num_m_blocks, int num_spans, bool varlen,
                 const std::vector<int>& residencies, const LaunchOverrides& o) {
  const int64_t per_m = int64_t(sh.nheads) * num_spans;  // tiles per query-tile row
  const int64_t tiles = num_m_blocks * per_m;
  const int sms = current_device().sms;
  const int unplanned_r = residencies.size() == 1 ? residencies[0] : tiles >= 3 * int64_t(sms) ? 3 : 2;
  const FwdPlan per_tile{int(std::min<int64_t>(tiles, INT32_MAX)), 1, unplanned_r};
  if (varlen || o.fwd_schedule == 0 || sh.batch == 0 || sh.seqlen_k == 0) return per_tile;
  if (o.fwd_whole >= 0) return FwdPlan{int(std::min<int64_t>(o.fwd_whole, tiles)), o.fwd_splits, unplanned_r};
  if (tiles >= 16 * int64_t(sms) && o.fwd_schedule != 1)
    return per_tile;  // many waves: quantisation costs little
  using Key = std::array<int64_t, 9>;
  static thread_local std::map<Key, FwdPlan> cache;
  const Key key{num_m_blocks, per_m, sh.seqlen_q,    sh.seqlen_k,
                sh.causal,    sms,   o.fwd_schedule, residencies.size() == 1 ? residencies[0] : 0,
                Tr::kBlockM};
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  std::vector<int> steps(static_cast<size_t>(tiles));
  for (int64_t i = 0; i < tiles; ++i) {  // heavy-first order, as tile_job
    const int m = num_m_blocks - 1 - int(i / per_m);
    steps[size_t(i)] = key_tiles<Tr>(sh.seqlen_q, sh.seqlen_k, m * Tr::kBlockM, sh.causal);
  }
  const FwdPlan plan = plan_fwd_launch(steps, sms, residencies, kMaxSplits, o.fwd_schedule == 1);
  cache.emplace(key, plan);
  return plan;
}

template <class Tr, typename T, bool kCausal, bool kHooks = false>
void launch_fwd(const FlashFwdParams& p, int num_spans, int max_q, const FwdPlan& plan, cudaStream_t s,
                const Scratch& scratch) {
  constexpr int kHeadDim = Tr::kHeadDim;
  FwdGrid grid{(max_q + Tr::kBlockM - 1) / Tr::kBlockM,
               num_spans,
               p.shape.softmax_scale * kLog2e,
               0,
               1,
               nullptr,
               nullptr,
               nullptr};
  const int64_t tiles = int64_t(grid.num_m_blocks) * p.shape.nheads * num_spans;
  const int64_t blocks = plan.whole + (tiles - plan.whole) * plan.splits;
  if (blocks > INT32_MAX) RFA_THROW("E_UNSUPPORTED", "flash_fwd: too many query tiles for one launch");
  grid.whole = plan.whole, grid.splits = plan.splits;
  ScratchBlock part(scratch);  // partials and arrival counters of split tiles, released once queued
  if (plan.whole < tiles) {
    const int64_t split_tiles = tiles - plan.whole, pieces = split_tiles * plan.splits;
    const size_t part_floats = size_t(pieces) * Tr::kBlockM * (kHeadDim + 1);
    grid.part_out =
        static_cast<float*>(part.get(part_floats * sizeof(float) + size_t(split_tiles) * sizeof(int)));
    grid.part_lse = grid.part_out + size_t(pieces) * Tr::kBlockM * kHeadDim;
    grid.arrivals = reinterpret_cast<int*>(grid.part_out + part_floats);
    RFA_CUDA_CHECK(cudaMemsetAsync(grid.arrivals, 0, size_t(split_tiles) * sizeof(int), s));
  }
  auto kernel = flash_fwd_kernel<Tr, T, kCausal, kHooks>;
  // Above 48 KB a kernel's dynamic shared memory must be opted into (per device, so every call).
  RFA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes));
  kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, s>>>(p, grid);
  RFA_CHECK_LAUNCH("flash_fwd_kernel");
}

template <class Tr, typename T>
void dispatch_causal(const FlashFwdParams& p, int num_spans, int max_q, const FwdPlan& plan, cudaStream_t s,
                     const Scratch& scratch) {
  if (p.shape.causal)
    launch_fwd<Tr, T, true>(p, num_spans, max_q, plan, s, scratch);
  else
    launch_fwd<Tr, T, false>(p, num_spans, max_q, plan, s, scratch);
}

// The mma.sync kernels at their one residency. kHooks: the instance with the score hooks, which
// masks causal calls itself (window right 0, in global positions where given).
template <class Tr, typename T, bool kHooks = false>
void dispatch_mma(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch,
                  const LaunchOverrides& o) {
  static const std::vector<int> residencies{Tr::kCtasPerSm};  // per instantiation: no allocation per launch
  const int m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const FwdPlan plan = plan_fwd<Tr>(p.shape, m_blocks, num_spans, p.seg.num_seqs > 0, residencies, o);
  if constexpr (kHooks)
    launch_fwd<Tr, T, false, true>(p, num_spans, max_q, plan, s, scratch);
  else
    dispatch_causal<Tr, T>(p, num_spans, max_q, plan, s, scratch);
}

// The wgmma kernel at two or three CTAs per SM, as the plan says (force_fwd_kernel may fix it).
template <typename T>
void dispatch_wgmma(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s, const Scratch& scratch,
                    const LaunchOverrides& o) {
  using Tr = FwdWgTraits<2>;  // the tile shape of both builds
  static_assert(FwdWgTraits<3>::kBlockM == Tr::kBlockM && FwdWgTraits<3>::kBlockN == Tr::kBlockN,
                "one plan for both residencies");
  const int m_blocks = (max_q + Tr::kBlockM - 1) / Tr::kBlockM;
  static const std::vector<int> both{2, 3}, two{2}, three{3};  // no allocation per launch
  const std::vector<int>& residencies = o.fwd_kernel == 1 ? two : o.fwd_kernel == 2 ? three : both;
  const FwdPlan plan = plan_fwd<Tr>(p.shape, m_blocks, num_spans, p.seg.num_seqs > 0, residencies, o);
  if (plan.ctas_per_sm == 3) return dispatch_causal<FwdWgTraits<3>, T>(p, num_spans, max_q, plan, s, scratch);
  dispatch_causal<FwdWgTraits<2>, T>(p, num_spans, max_q, plan, s, scratch);
}

// The Hopper forward (fwd/) where it covers the call and (unless forced) its grid has a tile for
// every SM; smaller grids leave SMs idle there, where the split plan of the kernels here fills them.
// Varlen calls reach it only when forced (force_fwd_kernel(5)) until the harness has run them there.
bool use_hopper_fwd(const FlashFwdParams& p, const LaunchOverrides& o) {
  const bool forced = o.fwd_kernel == 3 || o.fwd_kernel == 5;
  if ((o.fwd_kernel != -1 && !forced) || !current_device().sm90 || !hopper_fwd_covers(p, o.fwd_kernel == 5))
    return false;
  return forced || hopper_fwd_tiles(p) >= current_device().sms;
}

template <typename T>
void dispatch_head_dim(const FlashFwdParams& p, int num_spans, int max_q, cudaStream_t s,
                       const Scratch& scratch, const LaunchOverrides& o) {
  if (p.shape.head_dim > 128) {  // the Hopper forward's alone
    if (p.mods.any(p.shape.causal))
      RFA_THROW("E_UNSUPPORTED",
                "flash_fwd: window_size, softcap, alibi_slopes, dropout_p and global positions "
                "need head_dim <= 128 on CUDA (head_dim " +
                    std::to_string(p.shape.head_dim) + ")");
    if (flash_fwd_hopper(p, s, scratch, o)) return;
    RFA_THROW("E_UNSUPPORTED",
              "flash_fwd: head_dim " + std::to_string(p.shape.head_dim) +
                  ": the driver declined a tensor map of q, k or v (a stride it cannot take)");
  }
  if (p.mods.any(p.shape.causal)) {
    // The Hopper forward's hook instance where it covers the call (dense, head_dim 64 and 128);
    // else the mma.sync kernels' hook instances, on every device.
    if (use_hopper_fwd(p, o) && flash_fwd_hopper(p, s, scratch, o)) return;
    switch (p.shape.head_dim) {
      case 32:
        return dispatch_mma<FwdTraits<32>, T, true>(p, num_spans, max_q, s, scratch, o);
      case 64:
        return dispatch_mma<FwdTraits<64>, T, true>(p, num_spans, max_q, s, scratch, o);
      default:
        return dispatch_mma<FwdTraits<128, 1>, T, true>(p, num_spans, max_q, s, scratch, o);
    }
  }
  if (use_hopper_fwd(p, o) && flash_fwd_hopper(p, s, scratch, o)) return;
  switch (p.shape.head_dim) {
    case 32:
      return dispatch_mma<FwdTraits<32>, T>(p, num_spans, max_q, s, scratch, o);
    case 64:
      return dispatch_mma<FwdTraits<64>, T>(p, num_spans, max_q, s, scratch, o);
    default:
      if (use_wgmma_fwd(o)) return dispatch_wgmma<T>(p, num_spans, max_q, s, scratch, o);
      return dispatch_mma<FwdTraits<128>, T>(p, num_spans, max_q, s, scratch, o);
  }
}

}  // namespace

LaunchOverrides& process_overrides() {
  static LaunchOverrides o;
  return o;
}

void force_fwd_plan(int whole, int splits) {
  RFA_CHECK_ARG(whole < 0 || (splits >= 1 && splits <= kMaxSplits), "force_fwd_plan: splits out of range");
  process_overrides().fwd_whole = whole, process_overrides().fwd_splits = splits;
}

void flash_fwd(const FlashFwdParams& p, cudaStream_t s, const Scratch& scratch) {
  flash_fwd(p, s, scratch, process_overrides());
}

void flash_fwd(const FlashFwdParams& params, cudaStream_t s, const Scratch& scratch,
               const LaunchOverrides& o) {
  RFA_CHECK_ARG(o.fwd_whole < 0 || (o.fwd_splits >= 1 && o.fwd_splits <= kMaxSplits),
                "flash_fwd: overrides: fwd_splits out of range");
  check_mods("flash_fwd", params.mods, params.seg);
  FlashFwdParams p = params;
  if (p.merge && !p.merge_src) {  // in place: the kernels always read the running out at merge_src
    RFA_CHECK_ARG(p.out_dtype == DType::f32, "flash_fwd: merging into a 16-bit out needs merge_src");
    p.merge_src = static_cast<const float*>(p.out), p.src_stride = p.o_stride;
  }
  const AttnShape& sh = p.shape;
  check_attn("flash_fwd", sh, p.dtype, p.seg, current_device().sm90 && p.seg.num_seqs == 0);
  const bool varlen = p.seg.num_seqs > 0;
  const int num_spans = varlen ? p.seg.num_seqs : sh.batch;
  const int max_q = varlen ? p.seg.max_seqlen_q : sh.seqlen_q;
  if (num_spans == 0 || max_q == 0) return;
  RFA_CHECK_ARG(p.q && p.k && p.v && p.out && p.lse, "flash_fwd: null tensor");
  RFA_CHECK_ARG(p.out_dtype == DType::f32 || p.out_dtype == p.dtype,
                "flash_fwd: out must be float32 or the dtype of q");
  check_view16("flash_fwd", "q", p.q, p.q_stride);
  check_view16("flash_fwd", "k", p.k, p.k_stride);
  check_view16("flash_fwd", "v", p.v, p.v_stride);
  if (p.dtype == DType::bf16)
    dispatch_head_dim<__nv_bfloat16>(p, num_spans, max_q, s, scratch, o);
  else
    dispatch_head_dim<__half>(p, num_spans, max_q, s, scratch, o);
}

}  // namespace rfa::cuda
