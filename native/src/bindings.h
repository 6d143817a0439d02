// Each backend registers its JS entry points on the addon's exports.
#pragma once
#include <napi.h>

namespace rfa::napi {
void register_cpu(Napi::Env env, Napi::Object exports);
#if defined(RFA_WITH_CUDA) && __has_include("cuda/device_context.h") && __has_include("cuda/flash_kernels.h") && \
    __has_include("cuda/nccl_loader.h")
#define RFA_CUDA_READY 1
void register_cuda(Napi::Env env, Napi::Object exports);
#endif
}  // namespace rfa::napi
