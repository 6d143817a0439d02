// CUDA error checks for native code: never exit, throw rfa::NativeError("E_CUDA") carrying
// file:line (from RFA_THROW) and the CUDA error string, which native/src turns into a typed JS
// error. Shared by every .cu/.cc file of the CUDA backend.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "error.h"

// Wraps a runtime call: RFA_CUDA_CHECK(cudaMemsetAsync(...)).
#define RFA_CUDA_CHECK(expr)                                                                          \
  do {                                                                                                \
    const cudaError_t rfa_err_ = (expr);                                                              \
    if (rfa_err_ != cudaSuccess) RFA_THROW("E_CUDA", std::string(#expr) + ": " + cudaGetErrorString(rfa_err_)); \
  } while (0)

// After a kernel launch: configuration errors (too much shared memory, bad grid) surface here,
// named after the kernel so that the JS error says which launch failed.
#define RFA_CHECK_LAUNCH(kernel_name)                                                                 \
  do {                                                                                                \
    const cudaError_t rfa_err_ = cudaGetLastError();                                                  \
    if (rfa_err_ != cudaSuccess) RFA_THROW("E_CUDA", std::string(kernel_name) + ": " + cudaGetErrorString(rfa_err_)); \
  } while (0)
