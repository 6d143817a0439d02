// The memory-bound kernels around attention: the exact lse merge, dsum = rowsum(dout * out),
// dtype casts, fp32 accumulation and strided (b, s, h, d) copies. Rows are handled by one warp
// each (coalesced along head_dim); flat arrays by grid-stride loops, 16 bytes per access where
// the pointers allow it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "cuda/check.h"
#include "cuda/attn_kernels.h"

namespace rfa::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // grid-stride loops cover the rest

unsigned blocks_for(int64_t work_items) {
  const int64_t b = (work_items + kThreads - 1) / kThreads;
  return unsigned(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// (b, i, h) of row r = (b * seqlen + i) * heads + h of a (b, s, h, d) tensor.
struct RowIndex {
  int64_t b, i, h;
  __device__ RowIndex(int64_t r, int seqlen, int heads)
      : b(r / (int64_t(seqlen) * heads)), i(r / heads % seqlen), h(r % heads) {}
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// ---- merge ----------------------------------------------------------------------------------
// One warp per (b, h, row): every lane reads both lse values before lane 0 writes the new one.
//   lse = lse_a + softplus(lse_b - lse_a)  (= lse_a - logsigmoid(lse_a - lse_b))
//   out = out_a - sigmoid(lse_b - lse_a) * (out_a - out_b)
// lse_b = -inf: the block saw no key, keep a; lse_a = -inf: nothing merged yet, take b.
__global__ void merge_kernel(const MergeParams p, int64_t rows) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    const RowIndex ix(r, p.seqlen, p.nheads);
    float* lse = p.lse + ix.b * p.lse_stride.batch + ix.h * p.lse_stride.head + ix.i * p.lse_stride.row;
    const float la = *lse;
    const float lb = p.block_lse[ix.b * p.block_lse_stride.batch + ix.h * p.block_lse_stride.head +
                                 ix.i * p.block_lse_stride.row];
    if (lb == -INFINITY) continue;
    float* o = p.out + ix.b * p.o_stride.batch + ix.i * p.o_stride.row + ix.h * p.o_stride.head;
    const float* ob = p.block_out + ix.b * p.block_o_stride.batch + ix.i * p.block_o_stride.row +
                      ix.h * p.block_o_stride.head;
    const bool take_b = la == -INFINITY;
    const float x = lb - la;
    const float w = take_b ? 1.f : 1.f / (1.f + expf(-x));  // sigmoid(lb - la); exp overflow gives w = 0
    for (int c = lane; c < p.head_dim; c += 32) o[c] = take_b ? ob[c] : o[c] - w * (o[c] - ob[c]);
    __syncwarp();  // all lanes have read *lse
    if (lane == 0) *lse = take_b ? lb : la + fmaxf(x, 0.f) + log1pf(expf(-fabsf(x)));
  }
}

// ---- dsum = rowsum(dout * out) --------------------------------------------------------------
template <typename T, typename O>
__global__ void bwd_dot_kernel(const FlashBwdDotParams p, int64_t rows) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; r < rows;
       r += int64_t(gridDim.x) * blockDim.x / 32) {
    const RowIndex ix(r, p.seqlen_q, p.nheads);
    const T* dout = static_cast<const T*>(p.dout) + ix.b * p.dout_stride.batch + ix.i * p.dout_stride.row +
                    ix.h * p.dout_stride.head;
    const O* out = static_cast<const O*>(p.out) + ix.b * p.o_stride.batch + ix.i * p.o_stride.row +
                   ix.h * p.o_stride.head;
    float acc = 0.f;
    for (int c = lane; c < p.head_dim; c += 32) acc = fmaf(to_float(dout[c]), to_float(out[c]), acc);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0)
      p.dsum[ix.b * p.dsum_stride.batch + ix.h * p.dsum_stride.head + ix.i * p.dsum_stride.row] = acc;
  }
}

// dout of type T; out either fp32 (the running out of a ring) or T itself.
template <typename T>
void launch_bwd_dot(const FlashBwdDotParams& p, int64_t rows, bool out32, cudaStream_t s) {
  const unsigned blocks = blocks_for(rows * 32);
  if (out32)
    bwd_dot_kernel<T, float><<<blocks, kThreads, 0, s>>>(p, rows);
  else
    bwd_dot_kernel<T, T><<<blocks, kThreads, 0, s>>>(p, rows);
}

// ---- cast, add ------------------------------------------------------------------------------
template <typename S, typename D>
__global__ void cast_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = from_float<D>(to_float(src[i]));
}

__global__ void add_f32_kernel(float* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

// 16-byte version for aligned pointers: n4 float4's, the caller handles the tail.
__global__ void add_f32x4_kernel(float4* dst, const float4* src, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    float4 a = dst[i];
    const float4 b = src[i];
    a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
    dst[i] = a;
  }
}

// ---- copy_bsh -------------------------------------------------------------------------------
// Copies units of type U (uint4 = 16 bytes when rows allow, else the element type) of each
// (b, s, h) row; strides are given in units.
template <typename U>
__global__ void copy_bsh_kernel(const U* src, BshStrides ss, U* dst, BshStrides ds, int seqlen, int heads,
                                int units_per_row, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e % units_per_row;
    const RowIndex ix(e / units_per_row, seqlen, heads);
    dst[ix.b * ds.batch + ix.i * ds.row + ix.h * ds.head + c] =
        src[ix.b * ss.batch + ix.i * ss.row + ix.h * ss.head + c];
  }
}

template <typename U>
void launch_copy(const void* src, BshStrides ss, void* dst, BshStrides ds, int32_t batch, int32_t seqlen,
                 int32_t heads, int units_per_row, int64_t per_unit, cudaStream_t s) {
  auto in_units = [per_unit](BshStrides st) {
    return BshStrides{st.batch / per_unit, st.row / per_unit, st.head / per_unit};
  };
  const int64_t n = int64_t(batch) * seqlen * heads * units_per_row;
  copy_bsh_kernel<U><<<blocks_for(n), kThreads, 0, s>>>(static_cast<const U*>(src), in_units(ss),
                                                        static_cast<U*>(dst), in_units(ds), seqlen, heads,
                                                        units_per_row, n);
  RFA_CHECK_LAUNCH("copy_bsh_kernel");
}

template <typename S>
void launch_cast_from(const S* src, void* dst, DType dt, int64_t n, cudaStream_t s) {
  switch (dt) {
    case DType::f32:
      cast_kernel<<<blocks_for(n), kThreads, 0, s>>>(src, static_cast<float*>(dst), n);
      break;
    case DType::bf16:
      cast_kernel<<<blocks_for(n), kThreads, 0, s>>>(src, static_cast<__nv_bfloat16*>(dst), n);
      break;
    case DType::f16:
      cast_kernel<<<blocks_for(n), kThreads, 0, s>>>(src, static_cast<__half*>(dst), n);
      break;
  }
  RFA_CHECK_LAUNCH("cast_kernel");
}

bool valid_dtype(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

}  // namespace

void merge(const MergeParams& p, cudaStream_t s) {
  RFA_CHECK_ARG(p.batch >= 0 && p.seqlen >= 0 && p.nheads >= 0 && p.head_dim >= 0,
                "merge: negative dimension");
  const int64_t rows = int64_t(p.batch) * p.seqlen * p.nheads;
  if (rows == 0 || p.head_dim == 0) return;
  RFA_CHECK_ARG(p.out && p.lse && p.block_out && p.block_lse, "merge: null tensor");
  merge_kernel<<<blocks_for(rows * 32), kThreads, 0, s>>>(p, rows);
  RFA_CHECK_LAUNCH("merge_kernel");
}

void flash_bwd_dot(const FlashBwdDotParams& p, cudaStream_t s) {
  RFA_CHECK_ARG(p.batch >= 0 && p.seqlen_q >= 0 && p.nheads >= 0 && p.head_dim >= 0,
                "flash_bwd_dot: negative dimension");
  RFA_CHECK_ARG(valid_dtype(p.dtype), "flash_bwd_dot: unknown dout dtype");
  const int64_t rows = int64_t(p.batch) * p.seqlen_q * p.nheads;
  if (rows == 0) return;
  RFA_CHECK_ARG(p.dout && p.out && p.dsum, "flash_bwd_dot: null tensor");
  RFA_CHECK_ARG(p.out_dtype == DType::f32 || p.out_dtype == p.dtype,
                "flash_bwd_dot: out must be float32 or the dtype of dout");
  const bool out32 = p.out_dtype == DType::f32;
  switch (p.dtype) {
    case DType::f32:
      launch_bwd_dot<float>(p, rows, out32, s);
      break;
    case DType::bf16:
      launch_bwd_dot<__nv_bfloat16>(p, rows, out32, s);
      break;
    case DType::f16:
      launch_bwd_dot<__half>(p, rows, out32, s);
      break;
  }
  RFA_CHECK_LAUNCH("bwd_dot_kernel");
}

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t s) {
  RFA_CHECK_ARG(valid_dtype(src_dtype) && valid_dtype(dst_dtype), "cast: unknown dtype");
  RFA_CHECK_ARG(n >= 0, "cast: negative length");
  if (n == 0) return;
  RFA_CHECK_ARG(src && dst, "cast: null tensor");
  switch (src_dtype) {
    case DType::f32:
      return launch_cast_from(static_cast<const float*>(src), dst, dst_dtype, n, s);
    case DType::bf16:
      return launch_cast_from(static_cast<const __nv_bfloat16*>(src), dst, dst_dtype, n, s);
    case DType::f16:
      return launch_cast_from(static_cast<const __half*>(src), dst, dst_dtype, n, s);
  }
}

void add_f32(float* dst, const float* src, int64_t n, cudaStream_t s) {
  RFA_CHECK_ARG(n >= 0, "add_f32: negative length");
  if (n == 0) return;
  RFA_CHECK_ARG(src && dst, "add_f32: null tensor");
  int64_t done = 0;
  if (aligned16(dst) && aligned16(src)) {
    const int64_t n4 = n / 4;
    if (n4 > 0) {
      add_f32x4_kernel<<<blocks_for(n4), kThreads, 0, s>>>(reinterpret_cast<float4*>(dst),
                                                           reinterpret_cast<const float4*>(src), n4);
      RFA_CHECK_LAUNCH("add_f32x4_kernel");
    }
    done = n4 * 4;
  }
  if (done < n) {
    add_f32_kernel<<<blocks_for(n - done), kThreads, 0, s>>>(dst + done, src + done, n - done);
    RFA_CHECK_LAUNCH("add_f32_kernel");
  }
}

void copy_bsh(const void* src, BshStrides ss, void* dst, BshStrides ds, int32_t batch, int32_t seqlen,
              int32_t heads, int32_t head_dim, DType dtype, cudaStream_t s) {
  RFA_CHECK_ARG(valid_dtype(dtype), "copy_bsh: unknown dtype");
  RFA_CHECK_ARG(batch >= 0 && seqlen >= 0 && heads >= 0 && head_dim >= 0, "copy_bsh: negative dimension");
  if (int64_t(batch) * seqlen * heads * head_dim == 0) return;
  RFA_CHECK_ARG(src && dst, "copy_bsh: null tensor");
  const int64_t esz = dtype_bytes(dtype);
  const int64_t per16 = 16 / esz;  // elements per 16-byte unit
  if (head_dim % per16 == 0 && rows_aligned(src, ss, per16, esz) && rows_aligned(dst, ds, per16, esz))
    launch_copy<uint4>(src, ss, dst, ds, batch, seqlen, heads, int(head_dim / per16), per16, s);
  else if (esz == 4)
    launch_copy<float>(src, ss, dst, ds, batch, seqlen, heads, head_dim, 1, s);
  else
    launch_copy<uint16_t>(src, ss, dst, ds, batch, seqlen, heads, head_dim, 1, s);
}

}  // namespace rfa::cuda
