// Each backend registers its JS entry points on the addon's exports.
#pragma once
#include <napi.h>

#include <utility>
#include <vector>

namespace rfa::napi {

using Entry = std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)>;

// exports[name] = an object of the given functions (each named after its key, for stack traces).
inline void export_functions(Napi::Env env, Napi::Object exports, const char* name,
                             const std::vector<Entry>& fns) {
  Napi::Object o = Napi::Object::New(env);
  for (const Entry& f : fns) o.Set(f.first, Napi::Function::New(env, f.second, f.first));
  exports.Set(name, o);
}

void register_cpu(Napi::Env env, Napi::Object exports);
void register_plan(Napi::Env env, Napi::Object exports);
#ifdef RFA_WITH_CUDA
void register_cuda(Napi::Env env, Napi::Object exports);
#endif
}  // namespace rfa::napi
