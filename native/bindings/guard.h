// Runs a native body and turns any C++ exception into a JS Error carrying `code`, so that no
// failure in native code can take the process down.
#pragma once
#include <napi.h>

#include <exception>
#include <string>

#include "error.h"

namespace rfa::napi {

inline Napi::Error js_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Value().Set("code", Napi::String::New(env, code));
  return e;
}

template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const NativeError& e) {
    throw js_error(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throw js_error(env, "E_MEMORY", "host out of memory");
  } catch (const std::exception& e) {
    throw js_error(env, "E_NATIVE", e.what());
  }
}

inline Napi::Object arg_object(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsObject()) RFA_THROW("E_ARG", "expected a parameter object");
  return info[i].As<Napi::Object>();
}

inline std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    RFA_THROW("E_ARG", std::string("expected a string argument '") + name + "'");
  return info[i].As<Napi::String>().Utf8Value();
}

}  // namespace rfa::napi
