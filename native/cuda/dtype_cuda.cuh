// Element loads/stores by run-time dtype for the simple (memory-bound) kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "attn_params.h"

namespace rfa::cuda {

__device__ __forceinline__ float load_as_float(const void* base, int64_t i, DType t) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    default: return __half2float(static_cast<const __half*>(base)[i]);
  }
}

__device__ __forceinline__ void store_from_float(void* base, int64_t i, DType t, float x) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = x; break;
    case DType::bf16: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(x); break;
    default: static_cast<__half*>(base)[i] = __float2half_rn(x); break;
  }
}

}  // namespace rfa::cuda
