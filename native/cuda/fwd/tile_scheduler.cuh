// The Hopper forward's persistent tile scheduler. The grid holds at most one CTA per SM; each
// CTA takes query tiles (of kBlockM rows, one head, one batch entry) until none is left. Tiles are
// numbered heaviest first (for causal, the last query tiles, which see the most keys), and a CTA
// starts on tile blockIdx.x and then takes the next number from one global counter, so the
// largest tiles go first and the small ones fill the gaps at the end (longest-processing-time
// first). The producer thread fetches the numbers and hands them to the consumer warps through
// a two-slot mailbox in shared memory (TileMailbox), one tile ahead of them.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_traits.h"
#include "cuda/hopper_sync.cuh"

namespace rfa::cuda {

struct FwdTileGrid {
  int num_m_blocks;  // query tiles per (head, batch entry)
  int heads;         // query heads
  int num_tiles;     // num_m_blocks * heads * batch
  int* next_tile;    // the global counter (zeroed before the launch): tiles taken past the first wave
};

// A tile number's query rows and head, heaviest first: every head of the last query tile, then
// the tile before it. Heads that share a kv head (GQA) are adjacent, so their K/V stays in L2.
struct FwdTile {
  int m_block, h, b;
};
__device__ __forceinline__ FwdTile fwd_tile(const FwdTileGrid& g, int tile) {
  const int per_m = g.num_tiles / g.num_m_blocks, j = tile % per_m;
  return FwdTile{g.num_m_blocks - 1 - tile / per_m, j % g.heads, j / g.heads};
}

// Two slots of tile numbers (-1: no more tiles), written by the producer and read by every
// consumer warp; slot k % 2 holds the k-th tile of this CTA.
struct TileMailbox {
  uint64_t full[2], empty[2];
  int tile[2];
  static constexpr int kReaders = 8;  // consumer warps
  __device__ __forceinline__ void init() {
    for (int i = 0; i < 2; ++i) mbar_init(&full[i], 1), mbar_init(&empty[i], kReaders);
  }
  // Producer: the k-th tile of the CTA is `tile` (or none, -1).
  __device__ __forceinline__ void post(int k, int t) {
    const int slot = k & 1;
    mbar_wait(&empty[slot], ((k >> 1) & 1) ^ 1);
    tile[slot] = t;
    mbar_arrive(&full[slot]);
  }
  // Consumer warp: the k-th tile.
  __device__ __forceinline__ int take(int k) {
    const int slot = k & 1;
    mbar_wait(&full[slot], (k >> 1) & 1);
    const int t = tile[slot];
    __syncwarp();
    if (threadIdx.x % kWarpSize == 0) mbar_arrive(&empty[slot]);
    return t;
  }
};

}  // namespace rfa::cuda
