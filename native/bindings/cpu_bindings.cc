// JS entry points of the CPU backend: kernels and the in-process communicator transport.
#include "bindings/bindings.h"
#include "bindings/kernel_bindings.h"

#include "cpu/flash_cpu.h"
#include "cpu/mailbox.h"
#include "cpu/net_mailbox.h"
#include "bindings/guard.h"
#include "bindings/params.h"

namespace rfa::napi {
namespace {

// The kernels as kernel_bindings.h calls them: the CPU runs each call to completion.
struct CpuKernels {
  static void flash_fwd(Napi::Env, const FlashFwdParams& p) { cpu::flash_fwd(p); }
  static void flash_bwd_dot(Napi::Env, const FlashBwdDotParams& p) { cpu::flash_bwd_dot(p); }
  static void flash_bwd(Napi::Env, const FlashBwdParams& p) { cpu::flash_bwd(p); }
  static void merge(Napi::Env, const MergeParams& p) { cpu::merge(p); }
  static void cast(Napi::Env, const CastArgs& a) { cpu::cast(a.src, a.src_dtype, a.dst, a.dst_dtype, a.n); }
  static void add_f32(Napi::Env, const AddArgs& a) { cpu::add_f32(a.dst, a.src, a.n); }
  static void copy_bsh(Napi::Env, const CopyArgs& a) {
    cpu::copy_bsh(a.src, a.src_stride, a.dst, a.dst_stride, a.batch, a.seqlen, a.heads, a.head_dim, a.dtype);
  }
};

// { comm, src, dst, data: view, n, elem_bytes, label? }: the mailbox's (comm, src, dst, data,
// bytes, label) handed to `op`.
template <class Op>
Napi::Value mail_op(const Napi::CallbackInfo& info, Op op) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    const int eb = int(get_i64(o, "elem_bytes"));
    op(o, o.Get("comm").ToString().Utf8Value(), int(get_i64(o, "src")), int(get_i64(o, "dst")),
       flat_view(o, "data", n, eb), size_t(n) * eb, get_label(o));
    return info.Env().Undefined();
  });
}

Napi::Value MailSend(const Napi::CallbackInfo& info) {
  return mail_op(info,
                 [](const Napi::Object&, const std::string& comm, int src, int dst, void* data, size_t bytes,
                    const std::string& label) { cpu::mailbox_send(comm, src, dst, data, bytes, label); });
}

// ... and timeout_ms
Napi::Value MailRecv(const Napi::CallbackInfo& info) {
  return mail_op(info, [](const Napi::Object& o, const std::string& comm, int src, int dst, void* data,
                          size_t bytes, const std::string& label) {
    cpu::mailbox_recv(comm, src, dst, data, bytes, label, int(get_i64(o, "timeout_ms")));
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
  return guarded(info, [&] {
    cpu::mailbox_reset(arg_string(info, 0, "scope"));
    return info.Env().Undefined();
  });
}

// (scope, port) -> the port this process listens on for the other processes of the runtime.
Napi::Value NetListen(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    if (info.Length() < 2 || !info[1].IsNumber()) RFA_THROW("E_ARG", "expected a number argument 'port'");
    const int port = cpu::net_listen(arg_string(info, 0, "scope"), info[1].As<Napi::Number>().Int32Value());
    return Napi::Number::New(info.Env(), port);
  });
}

// { scope, self, timeout_ms, procs: [{ host, port, first_rank, ranks, name }] }
Napi::Value NetConnect(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    Napi::Object o = arg_object(info, 0);
    Napi::Value v = o.Get("procs");
    if (!v.IsArray()) RFA_THROW("E_ARG", "procs must be an array");
    Napi::Array a = v.As<Napi::Array>();
    std::vector<cpu::NetProcess> procs;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      if (!a.Get(i).IsObject()) RFA_THROW("E_ARG", "procs[" + std::to_string(i) + "] must be an object");
      Napi::Object p = a.Get(i).As<Napi::Object>();
      procs.push_back({p.Get("host").ToString().Utf8Value(), int(get_i64(p, "port")),
                       int(get_i64(p, "first_rank")), int(get_i64(p, "ranks")),
                       p.Get("name").ToString().Utf8Value()});
    }
    cpu::net_connect(o.Get("scope").ToString().Utf8Value(), int(get_i64(o, "self")), procs,
                     int(get_i64(o, "timeout_ms")));
    return info.Env().Undefined();
  });
}

// (scope) -> whether every connection of net_connect is up.
Napi::Value NetPoll(const Napi::CallbackInfo& info) {
  return guarded(info,
                 [&] { return Napi::Boolean::New(info.Env(), cpu::net_poll(arg_string(info, 0, "scope"))); });
}

// (scope, call): the runtime begins its call number `call` (the same on every process).
Napi::Value NetBeginCall(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    if (info.Length() < 2 || !info[1].IsNumber()) RFA_THROW("E_ARG", "expected a number argument 'call'");
    cpu::net_begin_call(arg_string(info, 0, "scope"), uint64_t(info[1].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  });
}

Napi::Value NetClose(const Napi::CallbackInfo& info) {
  return guarded(info, [&] {
    cpu::net_close(arg_string(info, 0, "scope"));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_cpu(Napi::Env env, Napi::Object exports) {
  std::vector<Entry> entries = KernelBindings<CpuKernels>::entries();
  entries.insert(entries.end(), {{"mailSend", MailSend},
                                 {"mailRecv", MailRecv},
                                 {"mailAbort", MailAbort},
                                 {"mailReset", MailReset},
                                 {"netListen", NetListen},
                                 {"netConnect", NetConnect},
                                 {"netPoll", NetPoll},
                                 {"netBeginCall", NetBeginCall},
                                 {"netClose", NetClose}});
  export_functions(env, exports, "cpu", entries);
}

}  // namespace rfa::napi
