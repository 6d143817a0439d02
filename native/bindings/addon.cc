// The ring-flash-attn native addon: the CPU backend always, the CUDA backend when built with nvcc.
#include <napi.h>

#include "bindings/bindings.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  rfa::napi::register_cpu(env, exports);
  rfa::napi::register_plan(env, exports);
#ifdef RFA_WITH_CUDA
  rfa::napi::register_cuda(env, exports);
  exports.Set("cudaBuilt", Napi::Boolean::New(env, true));
#else
  exports.Set("cudaBuilt", Napi::Boolean::New(env, false));
#endif
  // Why a build has no CUDA backend, for init's error message.
#if defined(RFA_WITH_CUDA)
  exports.Set("cudaOmitted", Napi::String::New(env, ""));
#elif defined(RFA_CUDA_DISABLED)
  exports.Set("cudaOmitted", Napi::String::New(env, "it was built with RFA_CUDA=OFF"));
#else
  exports.Set("cudaOmitted", Napi::String::New(env, "nvcc was not found at build time"));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(ring_flash_attn, Init)
