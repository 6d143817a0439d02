// Fills n contiguous elements: 0 or NaN for any dtype (memset), other values float32 only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "attn_params.h"

namespace rfa::cuda {
void fill(void* dst, DType dtype, int64_t n, float value, cudaStream_t stream);
}
