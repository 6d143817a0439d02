// The FlashAttention-2 style forward's epilogues: a tile's rows to out/lse (or a piece's partial
// slot), a keyless tile's zeros, and the last piece of a split tile merging every piece's partial.
#pragma once
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"
#include "cuda/fwd/epilogue.cuh"
#include "cuda/fwd/split_grid.cuh"

namespace rfa::cuda {

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

}  // namespace rfa::cuda
