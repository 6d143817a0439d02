// The memory-bound kernels around attention: the lse merge, dsum = rowsum(dout * out), casts,
// fp32 accumulation and strided copies. One thread per element (or per row), grid-stride loops.
#include <cmath>

#include "cuda/attn_kernels.h"
#include "cuda/check.h"
#include "cuda/dtype_cuda.cuh"

namespace rfa::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return int(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

#define GRID_STRIDE(i, n) for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// One thread per (b, h, row): the row's weights, then its head_dim elements.
__global__ void merge_kernel(MergeParams p) {
  const int64_t rows = int64_t(p.batch) * p.nheads * p.seqlen;
  GRID_STRIDE(r, rows) {
    const int64_t i = r % p.seqlen, h = (r / p.seqlen) % p.nheads, b = r / (int64_t(p.seqlen) * p.nheads);
    float* lse = p.lse + b * p.lse_stride.batch + h * p.lse_stride.head + i * p.lse_stride.row;
    const float la = *lse, lb = p.block_lse[b * p.block_lse_stride.batch + h * p.block_lse_stride.head + i * p.block_lse_stride.row];
    if (lb == -INFINITY) continue;  // the block saw no key for this row
    float* o = p.out + b * p.o_stride.batch + i * p.o_stride.row + h * p.o_stride.head;
    const float* ob = p.block_out + b * p.block_o_stride.batch + i * p.block_o_stride.row + h * p.block_o_stride.head;
    if (la == -INFINITY) {
      for (int c = 0; c < p.head_dim; ++c) o[c] = ob[c];
      *lse = lb;
      continue;
    }
    // out = out_a - sigmoid(lb - la) (out_a - out_b);  lse = la + softplus(lb - la)
    const float x = lb - la;
    const float w = 1.f / (1.f + expf(-x));
    for (int c = 0; c < p.head_dim; ++c) o[c] = o[c] - w * (o[c] - ob[c]);
    *lse = la + (x > 0.f ? x + log1pf(expf(-x)) : log1pf(expf(x)));
  }
}

// One warp per (b, h, row).
__global__ void bwd_dot_kernel(FlashBwdDotParams p) {
  const int64_t rows = int64_t(p.batch) * p.nheads * p.seqlen_q;
  const int lane = threadIdx.x & 31;
  const int64_t warp0 = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5, warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp0; r < rows; r += warps) {
    const int64_t i = r % p.seqlen_q, h = (r / p.seqlen_q) % p.nheads, b = r / (int64_t(p.seqlen_q) * p.nheads);
    const int64_t dofs = b * p.dout_stride.batch + i * p.dout_stride.row + h * p.dout_stride.head;
    const float* o = p.out + b * p.o_stride.batch + i * p.o_stride.row + h * p.o_stride.head;
    float s = 0.f;
    for (int c = lane; c < p.head_dim; c += 32) s += load_as_float(p.dout, dofs + c, p.dtype) * o[c];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) p.dsum[b * p.dsum_stride.batch + h * p.dsum_stride.head + i * p.dsum_stride.row] = s;
  }
}

__global__ void cast_kernel(const void* src, DType st, void* dst, DType dt, int64_t n) {
  GRID_STRIDE(i, n) store_from_float(dst, i, dt, load_as_float(src, i, st));
}

__global__ void add_kernel(float* dst, const float* src, int64_t n) {
  GRID_STRIDE(i, n) dst[i] += src[i];
}

// Element copy of (b, s, h, d) views in units of `T` (2 or 4 bytes).
template <typename T>
__global__ void copy_kernel(const T* src, BshStrides ss, T* dst, BshStrides ds, int32_t s, int32_t h, int32_t d, int64_t n) {
  GRID_STRIDE(e, n) {
    const int64_t c = e % d, hh = (e / d) % h, i = (e / (int64_t(d) * h)) % s, b = e / (int64_t(d) * h * s);
    dst[b * ds.batch + i * ds.row + hh * ds.head + c] = src[b * ss.batch + i * ss.row + hh * ss.head + c];
  }
}

}  // namespace

void merge(const MergeParams& p, cudaStream_t stream) {
  if (!p.out || !p.lse || !p.block_out || !p.block_lse) RFA_THROW("E_ARG", "merge: null tensor");
  const int64_t rows = int64_t(p.batch) * p.nheads * p.seqlen;
  if (rows == 0) return;
  merge_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(p);
  RFA_CHECK_LAUNCH("merge_kernel");
}

void flash_bwd_dot(const FlashBwdDotParams& p, cudaStream_t stream) {
  if (!p.dout || !p.out || !p.dsum) RFA_THROW("E_ARG", "flash_bwd_dot: null tensor");
  const int64_t rows = int64_t(p.batch) * p.nheads * p.seqlen_q;
  if (rows == 0) return;
  bwd_dot_kernel<<<blocks_for(rows * 32), kThreads, 0, stream>>>(p);
  RFA_CHECK_LAUNCH("bwd_dot_kernel");
}

void cast(const void* src, DType st, void* dst, DType dt, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (!src || !dst) RFA_THROW("E_ARG", "cast: null tensor");
  cast_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, st, dst, dt, n);
  RFA_CHECK_LAUNCH("cast_kernel");
}

void add_f32(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (!src || !dst) RFA_THROW("E_ARG", "add: null tensor");
  add_kernel<<<blocks_for(n), kThreads, 0, stream>>>(dst, src, n);
  RFA_CHECK_LAUNCH("add_kernel");
}

void copy_bsh(const void* src, BshStrides ss, void* dst, BshStrides ds, int32_t batch, int32_t seqlen, int32_t heads,
              int32_t head_dim, DType dtype, cudaStream_t stream) {
  const int64_t n = int64_t(batch) * seqlen * heads * head_dim;
  if (n == 0) return;
  if (!src || !dst) RFA_THROW("E_ARG", "copy: null tensor");
  if (dtype == DType::f32)
    copy_kernel<float><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const float*>(src), ss, static_cast<float*>(dst), ds, seqlen, heads, head_dim, n);
  else
    copy_kernel<uint16_t><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), ss, static_cast<uint16_t*>(dst), ds, seqlen, heads, head_dim, n);
  RFA_CHECK_LAUNCH("copy_kernel");
}

}  // namespace rfa::cuda
