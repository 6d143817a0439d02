// What a backward CTA works on and how it writes its results, shared by the FlashAttention-2
// style kernels (flash_bwd.cu) and the Hopper backward (bwd/): the grid of key tiles, a CTA's key
// tile and query steps, the dK/dV epilogue, and the deterministic mode's turns.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_traits.h"
#include "cuda/score_hooks.cuh"

namespace rfa::cuda {

struct BwdGrid {
  int num_n_blocks;  // key tiles per (kv head, span)
  int num_spans;     // batch entries, or varlen segments
  float scale_log2;  // softmax_scale * log2(e)
  bool dq_pairs;     // dq allows 8-byte (float2) atomics: aligned base, even strides
  // Split (dense batches only): when num_splits > 1, each key tile's (query head, query tile)
  // steps are cut into num_splits even ranges, one CTA each, and dK/dV are added with atomics
  // (onto zeros when not accumulating), so that a grid of few key tiles still fills every SM.
  int num_splits;
  bool dkv_pairs;  // dk and dv allow float2 atomics
  // Deterministic mode: per (span, query head, query tile) the number of key tiles that have added
  // their dQ part, zeroed before the launch; key tile n adds its part once the count reaches n, so
  // every dQ element sums its parts in key-tile order. Null otherwise.
  int* dq_turns = nullptr;
  int num_m_blocks = 0;  // query tiles per (span, query head): the counters' row length
  // Deterministic mode with a split: per (span, kv head, key tile) the number of splits that have
  // added their dK/dV, zeroed before the launch; split s adds once it reaches s. Null otherwise.
  int* dkv_turns = nullptr;
};

// A row's lse as the backward's exponentials take it, exp2(s * scale_log2 - lse_log2): times
// log2(e), and +inf for a row that saw no key (lse = -inf), so that its probabilities are 0.
__device__ __forceinline__ float lse_log2(float lse) { return lse == -INFINITY ? INFINITY : lse * kLog2e; }

// What a backward CTA works on: key tile [n0, n0 + kBlockN) of kv head hk in span sp, and its
// share [step0, step0 + steps) of the (query head, query tile) steps, head-major over the
// m_tiles query tiles from m_begin (kBlockM rows each) that see any of its keys. Key tiles go in
// index order: under a causal mask the first ones see the most queries. `active` false: the CTA
// has nothing to do (a tile past its span, or an empty share of a split).
struct BwdWork {
  Span sp;
  int span_id, hk, n0, group, keys_valid, diag, m_begin, m_tiles, split, step0, steps;
  bool active;
};

template <int kBlockN, int kBlockM, bool kCausal, bool kHooks = false>
__device__ __forceinline__ BwdWork bwd_work(const FlashBwdParams& p, const BwdGrid& grid) {
  BwdWork w;
  const int heads_k = p.shape.nheads_k;
  const int per_split = heads_k * grid.num_spans;
  const int per_n_block = per_split * grid.num_splits;
  const int split = w.split = int(blockIdx.x) % per_n_block / per_split;
  w.hk = int(blockIdx.x) % per_split % heads_k;
  w.span_id = int(blockIdx.x) % per_split / heads_k;
  w.sp = span_of(p.shape, p.seg, w.span_id);
  w.n0 = int(blockIdx.x) / per_n_block * kBlockN;
  w.group = p.shape.nheads / heads_k;
  w.keys_valid = min(kBlockN, w.sp.nk - w.n0);
  w.diag = w.sp.nk - w.sp.nq;  // causal (bottom-right): query i sees key j iff j <= i + diag
  // Query tiles that see any key of this tile: under the causal mask, rows i >= n0 - diag.
  const int first_row = kCausal ? max(0, w.n0 - w.diag) : 0;
  w.m_begin = first_row / kBlockM;
  w.m_tiles = first_row < w.sp.nq ? (w.sp.nq + kBlockM - 1) / kBlockM - w.m_begin : 0;
  if constexpr (kHooks) {  // only the query tiles whose windows reach this key tile
    const SpanHooks hk = span_hooks(p.mods, p.shape, w.sp, w.span_id, w.hk * w.group, p.seg.num_seqs > 0);
    int q_begin = 0, q_end = 0;
    if (w.keys_valid > 0) hk.query_range(w.n0, w.keys_valid, w.sp.nq, &q_begin, &q_end);
    w.m_begin = q_begin / kBlockM;
    w.m_tiles = q_end > q_begin ? (q_end + kBlockM - 1) / kBlockM - w.m_begin : 0;
  }
  const int all_steps = w.group * w.m_tiles;
  const int per_split_steps = (all_steps + grid.num_splits - 1) / grid.num_splits;
  w.step0 = min(all_steps, split * per_split_steps);
  w.steps = min(all_steps, w.step0 + per_split_steps) - w.step0;
  // A split's empty share adds nothing to dK/dV or dQ; an unsplit tile still writes its zeros. In
  // the deterministic mode an empty share still takes its dK/dV turn (write_dkv_in_turn).
  w.active = w.n0 < w.sp.nk && !(grid.num_splits > 1 && w.steps == 0 && !grid.dkv_turns);
  return w;
}

// Step i of a key tile's walk: its query head h and query tile mt. Default: head-major, query
// tiles in ascending order. Deterministic mode: query-tile-major from the last query tile
// down, every query head of the group per tile. Under a causal mask key tile n sees a suffix of
// the query tiles tile n-1 sees, so walked from the end both reach a query tile at the same step,
// and tile n waits for its dQ turn only as long as tile n-1's adds take; walked from the start,
// tile n would wait out tile n-1's extra first steps (two per tile of its index), holding its SM.
// With the wgmma kernel and the deferred turn hand-over, this walk takes deterministic mode most
// of the way to the default's speed (benchmark/RESULTS.md; the walk's own share was not measured
// apart).
template <bool kDet>
__device__ __forceinline__ void step_at(const BwdWork& w, int i, int& h, int& mt) {
  if constexpr (kDet) {
    h = w.hk * w.group + i % w.group, mt = w.m_begin + w.m_tiles - 1 - i / w.group;
  } else {
    h = w.hk * w.group + i / w.m_tiles, mt = w.m_begin + i % w.m_tiles;
  }
}

// The deterministic mode's turn counter of query head h, query tile mt (null otherwise).
__device__ __forceinline__ int* dq_turn(const FlashBwdParams& p, const BwdGrid& grid, const BwdWork& w, int h,
                                        int mt) {
  return grid.dq_turns ? grid.dq_turns + (int64_t(w.span_id) * p.shape.nheads + h) * grid.num_m_blocks + mt
                       : nullptr;
}

// Adds (x, y) to p[0], p[1]: one 8-byte atomic where `pair` says p is 8-byte aligned and the GPU
// has vector float atomics (sm_90), else two 4-byte ones.
__device__ __forceinline__ void atomic_add_pair(float* p, float x, float y, bool pair) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (pair) {
    atomicAdd(reinterpret_cast<float2*>(p), make_float2(x, y));
    return;
  }
#endif
  atomicAdd(p, x);
  atomicAdd(p + 1, y);
}

// Two adjacent columns of one key's dK and dV: added atomically when other CTAs (a split) add to
// the same key, else overwritten (write_dkv adds onto them itself when accumulating).
__device__ __forceinline__ void store_dkv(float* dk, float* dv, float k0, float k1, float v0, float v1,
                                          const BwdGrid& grid) {
  if (grid.num_splits > 1) {
    atomic_add_pair(dk, k0, k1, grid.dkv_pairs);
    atomic_add_pair(dv, v0, v1, grid.dkv_pairs);
  } else {
    dk[0] = k0, dk[1] = k1;
    dv[0] = v0, dv[1] = v1;
  }
}

// Epilogue of both kernels: this warp's 16 keys of dK (scaled) and dV. The accumulators are
// kTiles mma C fragments, tile i at [4i, 4i + 4): rows (keys) key_lo and key_lo + 8, columns
// col0 + 8i + 2t and col0 + 8i + 2t + 1.
template <int kTiles>
__device__ __forceinline__ void write_dkv(const FlashBwdParams& p, const BwdGrid& grid, const Span& sp,
                                          int hk, int key_lo, int t, const float* acc_dk, const float* acc_dv,
                                          int col0 = 0) {
  const float scale = p.shape.softmax_scale;
  float* gdk = p.dk + sp.b * p.dk_stride.batch + hk * p.dk_stride.head;
  float* gdv = p.dv + sp.b * p.dv_stride.batch + hk * p.dv_stride.head;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int key = key_lo + hi * 8;
    if (key >= sp.nk) continue;
    float* dk = gdk + int64_t(sp.k0 + key) * p.dk_stride.row + col0 + 2 * t;
    float* dv = gdv + int64_t(sp.k0 + key) * p.dv_stride.row + col0 + 2 * t;
    if (grid.num_splits == 1 && p.accumulate_dkv()) {
      // Adding onto dK/dV (every ring step does): the old values of kBatch tiles are loaded before
      // their stores. Interleaved, a store may alias the next load, so each load waited out a
      // memory latency (the forward's merge epilogue was markedly slower that way).
      constexpr int kBatch = kTiles < 4 ? kTiles : 4;
#pragma unroll
      for (int i0 = 0; i0 < kTiles; i0 += kBatch) {
        float old[kBatch][4];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int c = (i0 + i) * kMmaN;
          old[i][0] = dk[c], old[i][1] = dk[c + 1], old[i][2] = dv[c], old[i][3] = dv[c + 1];
        }
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
          const int c = (i0 + i) * kMmaN, a = 4 * (i0 + i) + 2 * hi;
          dk[c] = fmaf(acc_dk[a], scale, old[i][0]), dk[c + 1] = fmaf(acc_dk[a + 1], scale, old[i][1]);
          dv[c] = old[i][2] + acc_dv[a], dv[c + 1] = old[i][3] + acc_dv[a + 1];
        }
      }
      continue;
    }
#pragma unroll
    for (int i = 0; i < kTiles; ++i)
      store_dkv(dk + i * kMmaN, dv + i * kMmaN, acc_dk[4 * i + 2 * hi] * scale,
                acc_dk[4 * i + 2 * hi + 1] * scale, acc_dv[4 * i + 2 * hi], acc_dv[4 * i + 2 * hi + 1], grid);
  }
}

// Spins (acquire loads) until `turn` reaches `mine`.
__device__ __forceinline__ void poll_turn(const int* turn, int mine) {
  int now;
  while (true) {
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(now) : "l"(turn) : "memory");
    if (now == mine) break;
    __nanosleep(64);
  }
}

// Sets `turn` to `next` with release semantics (a gpu-scope fence, then the store).
__device__ __forceinline__ void release_turn(int* turn, int next) {
  asm volatile("fence.acq_rel.gpu;\n\tst.relaxed.gpu.global.b32 [%0], %1;" ::"l"(turn), "r"(next) : "memory");
}

// Deterministic dQ (BwdGrid::dq_turns): the whole CTA waits until `turn` reaches `mine`. Only key
// tiles of lower index, hence of lower blockIdx and launched earlier, are waited for, so the
// wait cannot deadlock. Thread 0 polls with acquire loads; the barrier passes the order on to
// every thread's atomics that follow.
__device__ __forceinline__ void wait_turn(const int* turn, int mine) {
  if (threadIdx.x == 0) poll_turn(turn, mine);
  __syncthreads();
}

// Hands the turn on (release store of `next`) by thread 0 after a barrier that every thread
// reached after its dQ atomics: the release is cumulative over what the barrier ordered before it
// (CUTLASS's semaphores do the same), so only thread 0 waits for the fence.
__device__ __forceinline__ void pass_turn_after_barrier(int* turn, int next) {
  if (threadIdx.x == 0) release_turn(turn, next);
}

// After this CTA's dQ atomics of the tile.
__device__ __forceinline__ void pass_turn(int* turn, int next) {
  __syncthreads();
  pass_turn_after_barrier(turn, next);
}

// Orders this thread's global accesses of the generic proxy (the turns' loads and stores) with
// those of the async proxy (bulk reductions), both ways.
__device__ __forceinline__ void fence_proxy_async_global() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.global;\n" ::: "memory");
#endif
}

// The turns of one warp whose lanes add by bulk reductions (the Hopper backward's dQ warp): lane
// 0 polls, and every lane's reductions follow the acquire through the warp barrier and the proxy
// fence.
__device__ __forceinline__ void wait_turn_warp(const int* turn, int mine) {
  if (threadIdx.x % kWarpSize == 0) poll_turn(turn, mine);
  __syncwarp();
  fence_proxy_async_global();
}
// Once every lane's reductions are done (cp.async.bulk.wait_group 0): lane 0 releases the turn.
__device__ __forceinline__ void pass_turn_warp(int* turn, int next) {
  fence_proxy_async_global();
  __syncwarp();
  if (threadIdx.x % kWarpSize == 0) release_turn(turn, next);
}

// write_dkv, in the deterministic mode's split order: split s adds its dK/dV once splits 0..s-1
// have (lower blockIdx, launched earlier), so every element sums the splits in one order; an empty
// share only passes the turn on. Called by every thread of the CTA (the turns' barriers). kMaybeDet
// false: the default mode for certain (the wgmma kernel's default instance keeps its registers).
template <int kTiles, bool kMaybeDet>
__device__ __forceinline__ void write_dkv_in_turn(const FlashBwdParams& p, const BwdGrid& grid,
                                                  const BwdWork& w, int key_lo, int t, const float* acc_dk,
                                                  const float* acc_dv, int block_n, int col0 = 0) {
  if (!kMaybeDet || !grid.dkv_turns)
    return write_dkv<kTiles>(p, grid, w.sp, w.hk, key_lo, t, acc_dk, acc_dv, col0);
  int* turn =
      grid.dkv_turns + (int64_t(w.span_id) * p.shape.nheads_k + w.hk) * grid.num_n_blocks + w.n0 / block_n;
  wait_turn(turn, w.split);
  if (w.steps > 0) write_dkv<kTiles>(p, grid, w.sp, w.hk, key_lo, t, acc_dk, acc_dv, col0);
  pass_turn(turn, w.split + 1);
}

}  // namespace rfa::cuda
