// Fills n contiguous elements: 0 or NaN for any dtype (memset), other values float32 only.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "attn_params.h"

namespace rfa::cuda {
void fill(void* dst, DType dtype, int64_t n, float value, cudaStream_t stream);

// What device `dev` is and whether this build holds code it can run. Every kernel of the addon is
// compiled for the same targets, so the fill kernel's image stands for all of them.
struct KernelImage {
  bool ok = false;
  int binary_version = 0;  // the SASS target picked for the device (e.g. 90), 0 when JIT from PTX
  int ptx_version = 0;
  std::string error;  // cudaFuncGetAttributes' error when !ok
};
KernelImage kernel_image(int dev);
}  // namespace rfa::cuda
