#include "cuda/fill.h"

#include <cmath>
#include <string>

#include "error.h"

namespace rfa::cuda {
namespace {

__global__ void fill_f32_kernel(float* dst, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}

}  // namespace

void fill(void* dst, DType dtype, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  if (!dst) RFA_THROW("E_ARG", "fill: null tensor");
  cudaError_t err;
  if (value == 0.f || std::isnan(value)) {  // zero, or NaN: all-ones bytes are a NaN in every dtype
    err = cudaMemsetAsync(dst, std::isnan(value) ? 0xff : 0, size_t(n) * dtype_bytes(dtype), stream);
  } else {
    if (dtype != DType::f32) RFA_THROW("E_DTYPE", "fill: non-zero values need a float32 tensor");
    constexpr int kThreads = 256;
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    fill_f32_kernel<<<int(blocks < 4096 ? blocks : 4096), kThreads, 0, stream>>>(static_cast<float*>(dst), n,
                                                                                 value);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess) RFA_THROW("E_CUDA", std::string("fill: ") + cudaGetErrorString(err));
}

KernelImage kernel_image(int dev) {
  KernelImage k;
  int prev = 0;
  cudaGetDevice(&prev);
  cudaError_t err = cudaSetDevice(dev);
  cudaFuncAttributes a{};
  if (err == cudaSuccess) err = cudaFuncGetAttributes(&a, fill_f32_kernel);
  cudaSetDevice(prev);
  k.ok = err == cudaSuccess;
  if (k.ok) {
    k.binary_version = a.binaryVersion;
    k.ptx_version = a.ptxVersion;
  } else {
    k.error = cudaGetErrorString(err);
    cudaGetLastError();  // clear it: the failure is reported, not sticky
  }
  return k;
}

}  // namespace rfa::cuda
