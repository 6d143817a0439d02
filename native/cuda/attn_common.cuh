// Pieces shared by the forward and backward attention kernels: tile sizes, the per-CTA work
// unit (batch entry or varlen segment), and tile loads into padded shared memory.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/mma.cuh"

namespace rfa::cuda {

constexpr float kLog2e = 1.4426950408889634f;

template <int kHeadDim>
struct AttnTile {
  static constexpr int kBlockM = 64;  // query rows per CTA tile (16 per warp)
  static constexpr int kBlockN = 64;  // key rows per tile
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // Row pitch of a shared (rows x head_dim) tile: 16 extra bytes put the 8 rows an ldmatrix
  // reads in 8 different bank groups.
  static constexpr int kPitch = kHeadDim + 8;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  static_assert(kHeadDim % 16 == 0, "head_dim must be a multiple of the mma k (16)");
  static_assert(kBlockM == 16 * kWarps, "each warp owns 16 query rows");
  static_assert((kPitch * 2) % 16 == 0, "rows must stay 16-byte aligned for cp.async and ldmatrix");
};

// What one CTA works on: batch entry b, query rows [q0, q0+nq), key rows [k0, k0+nk).
struct Span {
  int64_t b;
  int q0, nq, k0, nk;
};

__device__ __forceinline__ Span span_of(const AttnShape& sh, const Segments& seg, int z) {
  if (seg.num_seqs == 0) return Span{z, 0, sh.seqlen_q, 0, sh.seqlen_k};
  return Span{0, seg.q_start[z], seg.q_len[z], seg.k_start[z], seg.k_len[z]};
}

// Loads rows [row0, row0 + 64) of head h (of span rows starting at `base_row`, `limit` valid)
// into a padded shared tile; rows past `limit` become zeros.
template <int kHeadDim, typename T>
__device__ __forceinline__ void load_tile(T* smem, const T* g, const BshStrides& st, int64_t b, int64_t h, int base_row,
                                          int row0, int limit) {
  using Tile = AttnTile<kHeadDim>;
  for (int c = threadIdx.x; c < 64 * Tile::kChunksPerRow; c += Tile::kThreads) {
    const int r = c / Tile::kChunksPerRow, col = (c % Tile::kChunksPerRow) * 8;
    const bool valid = row0 + r < limit;
    const T* src = g + b * st.batch + int64_t(base_row + (valid ? row0 + r : 0)) * st.row + h * st.head + col;
    cp_async_16(smem + r * Tile::kPitch + col, src, valid);
  }
}

}  // namespace rfa::cuda
