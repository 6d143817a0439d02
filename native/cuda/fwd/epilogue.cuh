// Forward epilogues: where a tile's rows of out and lse go, and the fused ring merge (p.merge)
// that adds a block's result to the running (out, lse) instead of overwriting it. Shared by the
// FlashAttention-2 style kernels (flash_fwd.cu) and the Hopper kernel (fwd/kernel_hopper.cu).
#pragma once
#include <cmath>
#include <cstdint>

#include "attn_params.h"
#include "cuda/flash_mma.cuh"
#include "cuda/flash_traits.h"

namespace rfa::cuda {

// Where a tile's rows of out and lse go: the caller's tensors (out in fp32 or, for a final
// single-device result, 16-bit), or a split piece's fp32 partial slot.
struct OutSite {
  void* out;  // element (row r, column c) at out + r * o_row + c, in fp32 or 16-bit units
  int64_t o_row;
  bool out16;
  float* lse;
  int64_t lse_row;
  // Stores n (1 or 2) adjacent columns: x0, x1 in fp32, or `pair` (two packed 16-bit values, low
  // half first) in 16 bits.
  __device__ __forceinline__ void store(int r, int c, float x0, float x1, uint32_t pair, int n) const {
    const int64_t at = int64_t(r) * o_row + c;
    if (out16) {
      static_cast<uint16_t*>(out)[at] = uint16_t(pair);
      if (n == 2) static_cast<uint16_t*>(out)[at + 1] = uint16_t(pair >> 16);
    } else {
      static_cast<float*>(out)[at] = x0;
      if (n == 2) static_cast<float*>(out)[at + 1] = x1;
    }
  }
};

__device__ __forceinline__ OutSite out_site(const FlashFwdParams& p, const Span& sp, int m0, int h) {
  const bool out16 = p.out_dtype != DType::f32;
  const int64_t at = sp.b * p.o_stride.batch + int64_t(sp.q0 + m0) * p.o_stride.row + h * p.o_stride.head;
  void* o = out16 ? static_cast<void*>(static_cast<uint16_t*>(p.out) + at)
                  : static_cast<void*>(static_cast<float*>(p.out) + at);
  return OutSite{
      o, p.o_stride.row, out16,
      p.lse + sp.b * p.lse_stride.batch + h * p.lse_stride.head + int64_t(sp.q0 + m0) * p.lse_stride.row,
      p.lse_stride.row};
}

// p.merge: where a tile's running fp32 out is read (p.merge_src; out itself when in place).
__device__ __forceinline__ bool in_place(const FlashFwdParams& p) { return p.merge_src == p.out; }

struct RunningOut {
  const float* base;
  int64_t row;
  __device__ __forceinline__ float2 load2(int r, int c) const {
    return *reinterpret_cast<const float2*>(base + int64_t(r) * row + c);
  }
};

__device__ __forceinline__ RunningOut running_out(const FlashFwdParams& p, const Span& sp, int m0, int h) {
  // flash_fwd sets merge_src to out when merging in place (a select here cost the main loop spills).
  return RunningOut{p.merge_src + sp.b * p.src_stride.batch + int64_t(sp.q0 + m0) * p.src_stride.row +
                        h * p.src_stride.head,
                    p.src_stride.row};
}

// p.merge: a row's new (out, lse) is the running one plus this block's. Weights of the two
// sides and the merged lse (the running side may have seen no key yet: lse -inf).
struct MergeWeights {
  float old_w, new_w, lse;
};
__device__ __forceinline__ MergeWeights merge_weights(float lse_old, float lse_blk) {
  if (lse_old == -INFINITY) return {0.f, 1.f, lse_blk};
  const float mx = fmaxf(lse_old, lse_blk);
  const float lse = mx + logf(expf(lse_old - mx) + expf(lse_blk - mx));
  return {expf(lse_old - lse), expf(lse_blk - lse), lse};
}

// Where a warp slice's rows go and how they merge: the output site, the running fp32 out it
// merges with (merge), and whether that running out is the output itself (in place).
struct RowsSink {
  OutSite o;
  RunningOut running;
  bool merge, in_place;
};

// The running lse of a warp slice's rows g and g + 8 (r0: the slice's first row within the tile),
// read by every lane of a row's quad before the slice's stores (__syncwarp between: lane 0
// rewrites it); -inf without merging.
__device__ __forceinline__ void read_lse_old(const RowsSink& sink, int rows_valid, int r0,
                                             float (&lse_old)[2]) {
  const int g = threadIdx.x % kWarpSize / 4;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int r = r0 + hi * 8 + g;
    lse_old[hi] = sink.merge && r < rows_valid ? sink.o.lse[int64_t(r) * sink.o.lse_row] : -INFINITY;
  }
}

// The final rows of one 16-row warp slice of a tile, from the accumulators of the mma C layout
// (acc_o[dt][e]: rows g and g + 8 of the slice, columns 8 dt + 2t..+1) and the thread's running
// row max and partial row sums: out = acc / sum and lse = max * scale + ln(sum), merged into the
// running out/lse (read_lse_old's) with sink.merge. `r0` is the slice's first row within the
// tile; rows >= rows_valid are skipped. Rows that saw no key get out 0 and lse -inf (merged: the
// running values are kept, copied when out is elsewhere).
template <int kOT, typename T>
__device__ __forceinline__ void store_rows(const RowsSink& sink, float scale, int rows_valid, int r0,
                                           const float (&lse_old)[2], const float (&acc_o)[kOT][4],
                                           const float (&row_max)[2], const float (&row_sum)[2]) {
  const int lane = threadIdx.x % kWarpSize, g = lane / 4, t = lane % 4;
  const OutSite& o = sink.o;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    float sum = row_sum[hi];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int r = r0 + hi * 8 + g;
    if (r >= rows_valid) continue;
    const float lse_blk = sum > 0.f ? row_max[hi] * scale + logf(sum) : -INFINITY;
    // A row the block adds nothing to keeps its running values (copied when out is elsewhere).
    if (sink.merge && lse_blk == -INFINITY && sink.in_place) continue;
    const MergeWeights w = !sink.merge            ? MergeWeights{0.f, 1.f, lse_blk}
                           : lse_blk == -INFINITY ? MergeWeights{1.f, 0.f, lse_old[hi]}
                                                  : merge_weights(lse_old[hi], lse_blk);
    const float inv = sum > 0.f ? w.new_w / sum : 0.f;
    // All of the row's running values are loaded before any store: in place, a store may alias
    // a later load, so interleaved they would wait out one memory latency each (measured:
    // benchmark/RESULTS.md).
    float2 prev[kOT];
#pragma unroll
    for (int dt = 0; dt < kOT; ++dt)
      prev[dt] = w.old_w != 0.f ? sink.running.load2(r, dt * kMmaN + 2 * t) : make_float2(0.f, 0.f);
#pragma unroll
    for (int dt = 0; dt < kOT; ++dt) {
      const float x0 = fmaf(w.old_w, prev[dt].x, acc_o[dt][2 * hi] * inv);
      const float x1 = fmaf(w.old_w, prev[dt].y, acc_o[dt][2 * hi + 1] * inv);
      o.store(r, dt * kMmaN + 2 * t, x0, x1, MmaType<T>::pack(x0, x1), 2);
    }
    if (t == 0) o.lse[int64_t(r) * o.lse_row] = w.lse;
  }
}

// One warp slice's rows, read_lse_old and store_rows in one.
template <int kOT, typename T>
__device__ __forceinline__ void store_warp_rows(const RowsSink& sink, float scale, int rows_valid, int r0,
                                                const float (&acc_o)[kOT][4], const float (&row_max)[2],
                                                const float (&row_sum)[2]) {
  float lse_old[2];
  read_lse_old(sink, rows_valid, r0, lse_old);
  __syncwarp();
  store_rows<kOT, T>(sink, scale, rows_valid, r0, lse_old, acc_o, row_max, row_sum);
}

// The sink of a tile's rows at row m0 of span sp, head h: the output, merged with p.merge.
__device__ __forceinline__ RowsSink out_sink(const FlashFwdParams& p, const Span& sp, int m0, int h) {
  return RowsSink{out_site(p, sp, m0, h), p.merge ? running_out(p, sp, m0, h) : RunningOut{nullptr, 0},
                  p.merge, in_place(p)};
}

}  // namespace rfa::cuda
