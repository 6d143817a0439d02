// Each backend registers its JS entry points on the addon's exports.
#pragma once
#include <napi.h>

namespace rfa::napi {
void register_cpu(Napi::Env env, Napi::Object exports);
void register_plan(Napi::Env env, Napi::Object exports);
#ifdef RFA_WITH_CUDA
void register_cuda(Napi::Env env, Napi::Object exports);
#endif
}  // namespace rfa::napi
