// The JS entry points of the attention kernels, written once for both backends. A backend is a
// struct of static functions (flash_fwd, flash_bwd_dot, flash_bwd, merge, cast, add_f32,
// copy_bsh) taking the Napi::Env and the parsed parameters; parsing lives here (params.h), so the
// CPU and CUDA kernels see identical arguments and reject bad ones with identical errors.
#pragma once
#include <vector>

#include "bindings/bindings.h"
#include "bindings/guard.h"
#include "bindings/params.h"

namespace rfa::napi {

// Arguments of cast: { src, src_dtype, dst, dst_dtype, n }.
struct CastArgs {
  const void* src;
  DType src_dtype;
  void* dst;
  DType dst_dtype;
  int64_t n;
};

inline CastArgs cast_args(const Napi::Object& o) {
  CastArgs a;
  a.n = get_i64(o, "n");
  a.src_dtype = get_dtype(o, "src_dtype");
  a.dst_dtype = get_dtype(o, "dst_dtype");
  a.src = flat_view(o, "src", a.n, dtype_bytes(a.src_dtype));
  a.dst = flat_view(o, "dst", a.n, dtype_bytes(a.dst_dtype));
  return a;
}

// Arguments of add_f32: { dst, src, n }, fp32.
struct AddArgs {
  float* dst;
  const float* src;
  int64_t n;
};

inline AddArgs add_args(const Napi::Object& o) {
  const int64_t n = get_i64(o, "n");
  return {static_cast<float*>(flat_view(o, "dst", n, 4)),
          static_cast<const float*>(flat_view(o, "src", n, 4)), n};
}

template <class Backend>
struct KernelBindings {
  // One entry: read the parameter object with `parse`, hand it to the backend's `run`.
  template <auto parse, auto run>
  static Napi::Value entry(const Napi::CallbackInfo& info) {
    return guarded(info, [&] {
      run(info.Env(), parse(arg_object(info, 0)));
      return info.Env().Undefined();
    });
  }

  static std::vector<Entry> entries() {
    return {
        {"flashFwd", entry<fwd_params, Backend::flash_fwd>},
        {"flashBwdDot", entry<bwd_dot_params, Backend::flash_bwd_dot>},
        {"flashBwd", entry<bwd_params, Backend::flash_bwd>},
        {"merge", entry<merge_params, Backend::merge>},
        {"cast", entry<cast_args, Backend::cast>},
        {"addF32", entry<add_args, Backend::add_f32>},
        {"copyBsh", entry<copy_args, Backend::copy_bsh>},
    };
  }
};

}  // namespace rfa::napi
