// The FlashAttention-2 style forward's grid (flash_fwd.cu): one CTA per query tile, heaviest first,
// or split tiles whose pieces each take a range of key tiles.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/fwd/epilogue.cuh"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

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

}  // namespace rfa::cuda
