// The CPU backend's kernels: the same entry points as native/cuda/attn_kernels.h, in plain C++.
// They are the reference backend that CI runs every ring algorithm on, so they favour exactness
// (double accumulators) over speed.
#pragma once
#include "attn_params.h"

namespace rfa::cpu {

void flash_fwd(const FlashFwdParams& p);
void flash_bwd_dot(const FlashBwdDotParams& p);
void flash_bwd(const FlashBwdParams& p);
void merge(const MergeParams& p);
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);
void add_f32(float* dst, const float* src, int64_t n);
void copy_bsh(const void* src, BshStrides src_stride, void* dst, BshStrides dst_stride, int32_t batch,
              int32_t seqlen, int32_t heads, int32_t head_dim, DType dtype);

}  // namespace rfa::cpu
