// JS entry points of the CUDA backend (compiled only when nvcc was found).
#ifdef RFA_WITH_CUDA
#include <cuda_runtime.h>

#include "src/bindings.h"
#include "src/guard.h"

namespace rfa::napi {
namespace {

Napi::Value DeviceCount(const Napi::CallbackInfo& info) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;  // no driver or no device: the cpu backend applies
  return Napi::Number::New(info.Env(), n);
}

}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("deviceCount", Napi::Function::New(env, DeviceCount));
  exports.Set("cuda", cuda);
}

}  // namespace rfa::napi
#endif
