// CUDA error checks that throw rfa::NativeError (never exit): file:line, the expression, and
// the CUDA error string reach JS as an E_CUDA error.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "error.h"

#define RFA_CUDA_CHECK(expr)                                                         \
  do {                                                                               \
    cudaError_t rfa_err_ = (expr);                                                   \
    if (rfa_err_ != cudaSuccess)                                                     \
      RFA_THROW("E_CUDA", std::string(#expr) + ": " + cudaGetErrorString(rfa_err_)); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, with the kernel's name.
#define RFA_CHECK_LAUNCH(name)                                                      \
  do {                                                                              \
    cudaError_t rfa_err_ = cudaGetLastError();                                      \
    if (rfa_err_ != cudaSuccess)                                                    \
      RFA_THROW("E_CUDA", std::string(name) + ": " + cudaGetErrorString(rfa_err_)); \
  } while (0)
