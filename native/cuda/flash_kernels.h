// Host entry points of the CUDA attention kernels: the same operations as native/cpu/flash_cpu.h,
// queued on `s`. Each validates cheaply (null pointers, dtypes, head_dim, nheads % nheads_k,
// alignment of the views) and throws E_ARG / E_UNSUPPORTED; every launch is checked and a failure
// throws E_CUDA naming the kernel. The parameter structs are documented in attn_params.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "attn_params.h"

namespace rfa::cuda {

// FlashAttention-2 style forward on the tensor cores (mma.sync m16n8k16, fp32 accumulate):
// q/k/v bf16 or f16, head_dim 32, 64 or 128; writes fp32 out and fp32 natural-log lse.
void flash_fwd(const FlashFwdParams& p, cudaStream_t s);

// dsum = rowsum(dout * out) in fp32 (dout of any dtype, out fp32).
void flash_bwd_dot(const FlashBwdDotParams& p, cudaStream_t s);

// FlashAttention-2 style backward (mma.sync): fp32 dq (atomics), dk, dv; `accumulate` adds.
void flash_bwd(const FlashBwdParams& p, cudaStream_t s);

// In-place exact lse merge of a block result into the running (out, lse).
void merge(const MergeParams& p, cudaStream_t s);

// dst[i] = (dst_dtype) src[i], contiguous, any pair of f32/bf16/f16 (round-to-nearest-even).
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t s);

// dst += src, fp32 contiguous.
void add_f32(float* dst, const float* src, int64_t n, cudaStream_t s);

// Strided (batch, seqlen, heads, head_dim) copy between views of the same dtype (f32/bf16/f16),
// head_dim contiguous on both sides; packs k/v views into contiguous send buffers and back.
void copy_bsh(const void* src, BshStrides src_stride, void* dst, BshStrides dst_stride, int32_t batch,
              int32_t seqlen, int32_t heads, int32_t head_dim, DType dtype, cudaStream_t s);

}  // namespace rfa::cuda
