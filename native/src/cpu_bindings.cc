// JS entry points of the CPU backend: kernels and the in-process communicator transport.
#include "src/bindings.h"

#include "cpu/flash_cpu.h"
#include "cpu/mailbox.h"
#include "src/guard.h"
#include "src/params.h"

namespace rfa::napi {
namespace {

Napi::Value FlashFwd(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cpu::flash_fwd(fwd_params(arg_object(info, 0))); return info.Env().Undefined(); });
}

Napi::Value FlashBwdDot(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cpu::flash_bwd_dot(bwd_dot_params(arg_object(info, 0))); return info.Env().Undefined(); });
}

Napi::Value FlashBwd(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cpu::flash_bwd(bwd_params(arg_object(info, 0))); return info.Env().Undefined(); });
}

Napi::Value Merge(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cpu::merge(merge_params(arg_object(info, 0))); return info.Env().Undefined(); });
}

// { src, src_dtype, dst, dst_dtype, n }
Napi::Value Cast(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    const DType st = get_dtype(o, "src_dtype"), dt = get_dtype(o, "dst_dtype");
    cpu::cast(flat_view(o, "src", n, dtype_bytes(st)), st, flat_view(o, "dst", n, dtype_bytes(dt)), dt, n);
    return info.Env().Undefined();
  });
}

// { dst, src, n } fp32
Napi::Value AddF32(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    cpu::add_f32(static_cast<float*>(flat_view(o, "dst", n, 4)), static_cast<const float*>(flat_view(o, "src", n, 4)), n);
    return info.Env().Undefined();
  });
}

Napi::Value CopyBsh(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    CopyArgs a = copy_args(arg_object(info, 0));
    cpu::copy_bsh(a.src, a.src_stride, a.dst, a.dst_stride, a.batch, a.seqlen, a.heads, a.head_dim, a.dtype);
    return info.Env().Undefined();
  });
}

// { comm, src, dst, data: view, n, elem_bytes }
Napi::Value MailSend(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    const int eb = int(get_i64(o, "elem_bytes"));
    cpu::mailbox_send(o.Get("comm").ToString().Utf8Value(), int(get_i64(o, "src")), int(get_i64(o, "dst")),
                      flat_view(o, "data", n, eb), size_t(n) * eb, get_label(o));
    return info.Env().Undefined();
  });
}

// { comm, src, dst, data: view, n, elem_bytes, timeout_ms }
Napi::Value MailRecv(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    const int eb = int(get_i64(o, "elem_bytes"));
    cpu::mailbox_recv(o.Get("comm").ToString().Utf8Value(), int(get_i64(o, "src")), int(get_i64(o, "dst")),
                      flat_view(o, "data", n, eb), size_t(n) * eb, get_label(o), int(get_i64(o, "timeout_ms")));
    return info.Env().Undefined();
  });
}

// (scope, reason): scope is the runtime id, the part of its communicator keys before '/'.
Napi::Value MailAbort(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    cpu::mailbox_abort(arg_string(info, 0, "scope"), arg_string(info, 1, "reason"));
    return info.Env().Undefined();
  });
}

Napi::Value MailReset(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { cpu::mailbox_reset(arg_string(info, 0, "scope")); return info.Env().Undefined(); });
}

}  // namespace

void register_cpu(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports, "cpu",
                   {{"flashFwd", FlashFwd}, {"flashBwdDot", FlashBwdDot}, {"flashBwd", FlashBwd}, {"merge", Merge},
                    {"cast", Cast}, {"addF32", AddF32}, {"copyBsh", CopyBsh}, {"mailSend", MailSend}, {"mailRecv", MailRecv},
                    {"mailAbort", MailAbort}, {"mailReset", MailReset}});
}

}  // namespace rfa::napi
