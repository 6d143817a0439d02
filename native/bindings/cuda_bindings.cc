// JS entry points of the CUDA backend (compiled only when nvcc was found). Each worker thread
// owns one DeviceContext (instance data of its N-API environment) and its NCCL communicators;
// NCCL unique ids are shared between the workers of the process through a registry keyed by
// group and generation, so members of a group can create its communicator without the main
// thread. After a failure the main thread aborts every communicator and bumps the generation,
// and the next use creates fresh ones. A runtime that spans processes gets its world id from
// process 0 (ncclRegisterWorldId). The communication entries parse their arguments and forward
// them to a cuda::Transport (cuda/transport.h).
#include "bindings/bindings.h"
#ifdef RFA_WITH_CUDA
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/attn_kernels.h"
#include "cuda/check.h"
#include "cuda/context.h"
#include "cuda/fill.h"
#include "cuda/nccl.h"
#include "cuda/peer_copy.h"
#include "cuda/transport.h"
#include "bindings/kernel_bindings.h"
#include "bindings/guard.h"
#include "bindings/params.h"

namespace rfa::napi {
namespace {

// ---- process-wide: NCCL ids by (group key, generation), generations per runtime (scope) ----
std::mutex g_ids_mu;
std::map<std::string, cuda::NcclId>* g_ids = new std::map<std::string, cuda::NcclId>();
std::map<std::string, uint64_t>* g_generation = new std::map<std::string, uint64_t>();
// Runtimes that span processes: scope -> the key of their world group and the NCCL id process 0
// handed out through the rendezvous store. Their communicators cannot be remade here (the other
// processes hold the id), so a failure ends them for good.
struct SpanningWorld {
  std::string key;
  cuda::NcclId id;
};
std::map<std::string, SpanningWorld>* g_spanning = new std::map<std::string, SpanningWorld>();

std::string scope_of(const std::string& key) { return key.substr(0, key.find('/')); }

uint64_t generation(const std::string& scope) {
  std::lock_guard<std::mutex> lock(g_ids_mu);
  const auto it = g_generation->find(scope);
  return it == g_generation->end() ? 0 : it->second;
}

cuda::NcclId shared_unique_id(const std::string& key, uint64_t gen) {
  std::lock_guard<std::mutex> lock(g_ids_mu);
  const auto span = g_spanning->find(scope_of(key));
  if (span != g_spanning->end()) {
    if (key != span->second.key)
      RFA_THROW("E_UNSUPPORTED",
                "group " + key.substr(key.find('/') + 1) +
                    ": NCCL sub-groups of a runtime that spans processes are not supported; ring "
                    "over the world group (or over the copy engines within one process)");
    if (gen != 0)
      RFA_THROW("E_NCCL",
                "the NCCL communicator spanning the processes was aborted after a failure, and NCCL cannot "
                "rejoin it from one process: restart every process of the runtime");
    return span->second.id;
  }
  const std::string keyed = key + "#" + std::to_string(gen);
  auto it = g_ids->find(keyed);
  if (it != g_ids->end()) return it->second;
  auto id = cuda::nccl_unique_id();
  (*g_ids)[keyed] = id;
  return id;
}

// ---- per worker ----
struct CommEntry {
  uint64_t generation = 0;
  std::unique_ptr<cuda::NcclComm> comm;
};

struct WorkerState {
  std::unique_ptr<cuda::DeviceContext> ctx;
  int device = -1;
  int timeout_ms = 60000;
  std::map<std::string, CommEntry> comms;
  std::vector<cudaEvent_t> free_events;
  std::map<int, cudaEvent_t> live_events;
  int next_event = 1;
  std::map<int, cudaEvent_t> timer_marks;  // TimerMark's events, until TimerElapsed reads them
  int next_mark = 1;

  ~WorkerState() {
    // Never throws: a throw during worker teardown would abort the process.
    comms.clear();
    for (auto e : free_events) cudaEventDestroy(e);
    for (auto& kv : live_events) cudaEventDestroy(kv.second);
    for (auto& kv : timer_marks) cudaEventDestroy(kv.second);
  }
};

WorkerState& state(Napi::Env env) {
  WorkerState* s = env.GetInstanceData<WorkerState>();
  if (!s || !s->ctx) RFA_THROW("E_DEVICE", "CUDA backend used before init(device) on this worker");
  RFA_CUDA_CHECK(cudaSetDevice(s->device));
  return *s;
}

cudaStream_t compute(Napi::Env env) { return state(env).ctx->compute(); }

cuda::NcclComm& comm_for(WorkerState& s, const Napi::Object& o) {
  const std::string key = o.Get("key").ToString().Utf8Value();
  const int nranks = int(get_i64(o, "nranks")), rank = int(get_i64(o, "rank"));
  const std::string scope = scope_of(key);
  const uint64_t gen = generation(scope);
  std::string reason;
  if (cuda::nccl_aborted(scope, &reason)) RFA_THROW("E_WORKER", "communicator aborted: " + reason);
  CommEntry& e = s.comms[key];
  if (!e.comm || e.generation != gen || e.comm->aborted()) {
    e.comm.reset();
    e.comm = std::make_unique<cuda::NcclComm>(scope, shared_unique_id(key, gen), nranks, rank, s.device,
                                              s.timeout_ms);
    e.generation = gen;
  }
  return *e.comm;
}

int record_comm_event(WorkerState& s) {
  cudaEvent_t ev;
  if (s.free_events.empty()) {
    RFA_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  } else {
    ev = s.free_events.back();
    s.free_events.pop_back();
  }
  RFA_CUDA_CHECK(cudaEventRecord(ev, s.ctx->comm()));
  const int id = s.next_event++;
  s.live_events[id] = ev;
  return id;
}

using Xfer = cuda::Transfer;

// { data, n, dtype, peer, rows?, label? }: with rows > 1, data.strides[0] is the pitch between
// rows; label describes the tensor for error messages.
Xfer transfer(const Napi::Object& t, const std::string& key) {
  const int64_t n = get_i64(t, "n");
  const DType dt = get_dtype(t, "dtype");
  const int peer = t.Has("peer") ? int(get_i64(t, "peer")) : 0;
  const int64_t rows = t.Has("rows") ? get_i64(t, "rows") : 1;
  if (rows <= 1)
    return {flat_view(t, "data", n, dtype_bytes(dt)), size_t(n), dt, peer, 1, size_t(n), get_label(t)};
  if (n % rows)
    RFA_THROW("E_ARG",
              key + ": " + std::to_string(n) + " elements are not " + std::to_string(rows) + " equal rows");
  RawView r = raw_view(get_obj(t, "data"), 1, dtype_bytes(dt), "data");
  const int64_t width = n / rows, pitch = r.strides[0];
  if (pitch < width)
    RFA_THROW("E_ARG", key + ": row pitch " + std::to_string(pitch) + " below the row length " +
                           std::to_string(width));
  const int64_t ext[2] = {rows, width};
  r.strides[1] = 1;
  check_extent(r, ext, 2, "data");
  return {r.base, size_t(n), dt, peer, size_t(rows), size_t(pitch), get_label(t)};
}

std::vector<Xfer> transfers(const Napi::Object& o, const char* key) {
  std::vector<Xfer> out;
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) RFA_THROW("E_ARG", std::string(key) + " must be an array");
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    if (!a.Get(i).IsObject()) RFA_THROW("E_ARG", std::string(key) + " must hold objects");
    out.push_back(transfer(a.Get(i).As<Napi::Object>(), key));
  }
  return out;
}

#define RFA_NAPI(name) Napi::Value name(const Napi::CallbackInfo& info)
#define RFA_BODY(...) return guarded(info, [&]() -> Napi::Value { __VA_ARGS__ })

RFA_NAPI(DeviceCount) {
  const int n = cuda::DeviceContext::device_count();  // 0 without a driver or device: the cpu backend applies
  return Napi::Number::New(info.Env(), n);
}

RFA_NAPI(PeerAccess) {
  const int device = info[0].As<Napi::Number>().Int32Value(), peer = info[1].As<Napi::Number>().Int32Value();
  return Napi::Boolean::New(info.Env(), cuda::DeviceContext::can_access_peer(device, peer));
}

// (device) -> { name, major, minor, ok, binaryVersion, ptxVersion, error }: init's check that this
// build has code the GPU can run.
RFA_NAPI(DeviceInfo) {
  RFA_BODY({
    Napi::Env env = info.Env();
    const int device = info[0].As<Napi::Number>().Int32Value();
    cudaDeviceProp prop{};
    RFA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    const cuda::KernelImage k = cuda::kernel_image(device);
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", Napi::String::New(env, prop.name));
    o.Set("major", Napi::Number::New(env, prop.major));
    o.Set("minor", Napi::Number::New(env, prop.minor));
    o.Set("ok", Napi::Boolean::New(env, k.ok));
    o.Set("binaryVersion", Napi::Number::New(env, k.binary_version));
    o.Set("ptxVersion", Napi::Number::New(env, k.ptx_version));
    o.Set("error", Napi::String::New(env, k.error));
    return o;
  });
}

RFA_NAPI(Init) {
  RFA_BODY({
    Napi::Env env = info.Env();
    const int device = info[0].As<Napi::Number>().Int32Value();
    WorkerState* s = env.GetInstanceData<WorkerState>();
    if (!s) {
      s = new WorkerState();
      env.SetInstanceData<WorkerState>(s);
    }
    if (info.Length() > 1 && info[1].IsNumber()) s->timeout_ms = info[1].As<Napi::Number>().Int32Value();
    if (!s->ctx) {
      s->ctx = std::make_unique<cuda::DeviceContext>(device);
      s->device = device;
    }
    return env.Undefined();
  });
}

RFA_NAPI(Alloc) {
  RFA_BODY({
    void* p = state(info.Env()).ctx->alloc(size_t(info[0].As<Napi::Number>().Int64Value()));
    return Napi::BigInt::New(info.Env(), uint64_t(reinterpret_cast<uintptr_t>(p)));
  });
}

void* bigint_ptr(const Napi::Value& v) {
  bool lossless = true;
  return reinterpret_cast<void*>(uintptr_t(v.As<Napi::BigInt>().Uint64Value(&lossless)));
}

RFA_NAPI(Free) {
  RFA_BODY({
    WorkerState& s = state(info.Env());
    s.ctx->release(bigint_ptr(info[0]));
    return info.Env().Undefined();
  });
}

RFA_NAPI(Upload) {
  RFA_BODY({
    Napi::TypedArray src = info[1].As<Napi::TypedArray>();
    state(info.Env())
        .ctx->h2d(bigint_ptr(info[0]), static_cast<char*>(src.ArrayBuffer().Data()) + src.ByteOffset(),
                  src.ByteLength());
    return info.Env().Undefined();
  });
}

RFA_NAPI(Download) {
  RFA_BODY({
    Napi::TypedArray dst = info[1].As<Napi::TypedArray>();
    state(info.Env())
        .ctx->d2h(static_cast<char*>(dst.ArrayBuffer().Data()) + dst.ByteOffset(), bigint_ptr(info[0]),
                  dst.ByteLength());
    return info.Env().Undefined();
  });
}

// { dst, n, dtype, value }
RFA_NAPI(Fill) {
  RFA_BODY({
    Napi::Object o = arg_object(info, 0);
    const int64_t n = get_i64(o, "n");
    const DType dt = get_dtype(o, "dtype");
    cuda::fill(flat_view(o, "dst", n, dtype_bytes(dt)), dt, n, float(get_f64(o, "value")),
               compute(info.Env()));
    return info.Env().Undefined();
  });
}

// Runs a kernel entry that takes (params, stream, scratch) on the compute stream. Kernel
// temporaries come from this worker's caching allocator, so they count in peak memory.
template <class Params>
void with_scratch(Napi::Env env, const Params& p,
                  void (*launch)(const Params&, cudaStream_t, const cuda::Scratch&)) {
  cuda::DeviceContext* ctx = state(env).ctx.get();
  const cuda::Scratch scratch{[ctx](size_t n) { return ctx->alloc(n); }, [ctx](void* p) { ctx->release(p); }};
  launch(p, ctx->compute(), scratch);
}

// The kernels as kernel_bindings.h calls them: queued on this worker's compute stream.
struct CudaKernels {
  static void flash_fwd(Napi::Env env, const FlashFwdParams& p) { with_scratch(env, p, cuda::flash_fwd); }
  static void flash_bwd_dot(Napi::Env env, const FlashBwdDotParams& p) {
    cuda::flash_bwd_dot(p, compute(env));
  }
  static void flash_bwd(Napi::Env env, const FlashBwdParams& p) { with_scratch(env, p, cuda::flash_bwd); }
  static void merge(Napi::Env env, const MergeParams& p) { cuda::merge(p, compute(env)); }
  static void cast(Napi::Env env, const CastArgs& a) {
    cuda::cast(a.src, a.src_dtype, a.dst, a.dst_dtype, a.n, compute(env));
  }
  static void add_f32(Napi::Env env, const AddArgs& a) { cuda::add_f32(a.dst, a.src, a.n, compute(env)); }
  static void copy_bsh(Napi::Env env, const CopyArgs& a) {
    cuda::copy_bsh(a.src, a.src_stride, a.dst, a.dst_stride, a.batch, a.seqlen, a.heads, a.head_dim, a.dtype,
                   compute(env));
  }
};

// The transport of one operation, as runtime/cuda_comm.ts chose it for this pair of ranks:
// { key, nranks, rank, transport: 'nccl' | 'copy-engine' }.
std::unique_ptr<cuda::Transport> transport_for(WorkerState& s, const Napi::Object& o) {
  const std::string transport = o.Get("transport").ToString().Utf8Value();
  if (transport == "copy-engine")
    return std::make_unique<cuda::CopyEngineTransport>(o.Get("key").ToString().Utf8Value(),
                                                       int(get_i64(o, "rank")), int(get_i64(o, "nranks")),
                                                       s.device, s.ctx->comm(), s.timeout_ms);
  if (transport == "nccl") return std::make_unique<cuda::NcclTransport>(comm_for(s, o), s.ctx->comm());
  RFA_THROW("E_ARG", "transport must be 'nccl' or 'copy-engine', got '" + transport + "'");
}

// { key, nranks, rank, transport, sends: [{data, n, dtype, peer, rows?, label?}], recvs: [...] }
// → event id
RFA_NAPI(CommSendRecv) {
  RFA_BODY({
    Napi::Object o = arg_object(info, 0);
    WorkerState& s = state(info.Env());
    auto sends = transfers(o, "sends"), recvs = transfers(o, "recvs");
    for (auto& x : recvs)
      if (x.rows > 1) RFA_THROW("E_ARG", "receive buffers must be contiguous");
    auto t = transport_for(s, o);
    s.ctx->comm_waits_for_compute();
    t->send_recv(sends, recvs);
    return Napi::Number::New(info.Env(), record_comm_event(s));
  });
}

// All-gather: { key, nranks, rank, transport, send: { data, n, dtype, rows?, label? }, recv }: recv
// (nranks · n) gets every member's send, which may be strided rows over the copy engines.
// Reduce-scatter: { key, nranks, rank, transport, send, recv, n, dtype: float32, slot? }: recv (n)
// gets this member's slice of the sum of every member's send (nranks · n); the copy engines pull
// through `slot` (n floats). Both return the event id for WaitEvent.
enum class Collective { kAllGather, kReduceScatter };

Napi::Value run_collective(const Napi::CallbackInfo& info, Collective kind) {
  return guarded(info, [&]() -> Napi::Value {
    Napi::Object o = arg_object(info, 0);
    WorkerState& s = state(info.Env());
    auto t = transport_for(s, o);
    const int64_t nranks = get_i64(o, "nranks");
    if (kind == Collective::kAllGather) {
      const Xfer send = transfer(get_obj(o, "send"), "send");
      void* recv = flat_view(o, "recv", int64_t(send.n) * nranks, dtype_bytes(send.dtype));
      s.ctx->comm_waits_for_compute();
      t->all_gather(send, recv);
      return Napi::Number::New(info.Env(), record_comm_event(s));
    }
    const int64_t n = get_i64(o, "n");
    if (get_dtype(o, "dtype") != DType::f32) RFA_THROW("E_ARG", "reduce-scatter sums float32 only");
    const float* send = static_cast<const float*>(flat_view(o, "send", n * nranks, 4));
    float* recv = static_cast<float*>(flat_view(o, "recv", n, 4));
    float* slot = o.Has("slot") ? static_cast<float*>(flat_view(o, "slot", n, 4)) : nullptr;
    s.ctx->comm_waits_for_compute();
    t->reduce_scatter(send, recv, size_t(n), slot);
    return Napi::Number::New(info.Env(), record_comm_event(s));
  });
}

RFA_NAPI(CommAllGather) { return run_collective(info, Collective::kAllGather); }
RFA_NAPI(CommReduceScatter) { return run_collective(info, Collective::kReduceScatter); }

// Makes the compute stream wait for a communication event, then recycles the event.
RFA_NAPI(WaitEvent) {
  RFA_BODY({
    WorkerState& s = state(info.Env());
    const int id = info[0].As<Napi::Number>().Int32Value();
    auto it = s.live_events.find(id);
    if (it == s.live_events.end()) RFA_THROW("E_ARG", "unknown communication event " + std::to_string(id));
    RFA_CUDA_CHECK(cudaStreamWaitEvent(s.ctx->compute(), it->second, 0));
    s.free_events.push_back(it->second);
    s.live_events.erase(it);
    return info.Env().Undefined();
  });
}

// Waits for this rank's queued work, polling NCCL for async errors and aborts; throws on timeout.
RFA_NAPI(Sync) {
  RFA_BODY({
    WorkerState& s = state(info.Env());
    const int timeout_ms = info[0].As<Napi::Number>().Int32Value();
    s.ctx->synchronize(timeout_ms, [&s] {
      for (auto& kv : s.comms)  // communicators of an earlier generation were aborted and replaced
        if (kv.second.comm && kv.second.generation == generation(scope_of(kv.first)))
          kv.second.comm->check_async_error();
    });
    return info.Env().Undefined();
  });
}

// Benchmark timing on the device (the Python project times its iterations between CUDA events): a timing
// event recorded on the compute stream once it has joined the comm stream, so a mark follows
// every operation this rank has queued. Returns the mark's id.
RFA_NAPI(TimerMark) {
  RFA_BODY({
    WorkerState& s = state(info.Env());
    cudaEvent_t ev;
    RFA_CUDA_CHECK(cudaEventCreate(&ev));
    s.ctx->compute_waits_for_comm();
    const cudaError_t err = cudaEventRecord(ev, s.ctx->compute());
    if (err != cudaSuccess) cudaEventDestroy(ev);
    RFA_CUDA_CHECK(err);
    const int id = s.next_mark++;
    s.timer_marks[id] = ev;
    return Napi::Number::New(info.Env(), id);
  });
}

// Milliseconds between two marks, once both have passed (call Sync first); frees both marks.
RFA_NAPI(TimerElapsed) {
  RFA_BODY({
    WorkerState& s = state(info.Env());
    const auto start = s.timer_marks.find(info[0].As<Napi::Number>().Int32Value());
    const auto stop = s.timer_marks.find(info[1].As<Napi::Number>().Int32Value());
    if (start == s.timer_marks.end() || stop == s.timer_marks.end() || start == stop)
      RFA_THROW("E_ARG", "unknown timer mark");
    const cudaEvent_t ev[2] = {start->second, stop->second};
    s.timer_marks.erase(start);
    s.timer_marks.erase(stop);
    float ms = 0;
    const cudaError_t err = cudaEventElapsedTime(&ms, ev[0], ev[1]);
    cudaEventDestroy(ev[0]);
    cudaEventDestroy(ev[1]);
    RFA_CUDA_CHECK(err);
    return Napi::Number::New(info.Env(), double(ms));
  });
}

RFA_NAPI(PeakBytes) {
  RFA_BODY({ return Napi::Number::New(info.Env(), double(state(info.Env()).ctx->peak_bytes())); });
}
RFA_NAPI(ResetPeak) {
  RFA_BODY({
    state(info.Env()).ctx->reset_peak();
    return info.Env().Undefined();
  });
}
RFA_NAPI(BytesInUse) {
  RFA_BODY({ return Napi::Number::New(info.Env(), double(state(info.Env()).ctx->bytes_in_use())); });
}
RFA_NAPI(BytesReserved) {
  RFA_BODY({ return Napi::Number::New(info.Env(), double(state(info.Env()).ctx->bytes_reserved())); });
}

// () -> a fresh NCCL unique id (128 bytes), for process 0 of a runtime that spans processes.
RFA_NAPI(NcclUniqueId) {
  RFA_BODY({
    const cuda::NcclId id = cuda::nccl_unique_id();
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), id.size());
    std::copy(id.begin(), id.end(), out.Data());
    return out;
  });
}

// (scope, world, id): the world group of `scope` (ranks 0..world-1) joins `id` on every process.
RFA_NAPI(NcclRegisterWorldId) {
  RFA_BODY({
    const std::string scope = arg_string(info, 0, "scope");
    if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsTypedArray())
      RFA_THROW("E_ARG", "expected (scope, world, id: Uint8Array)");
    const int world = info[1].As<Napi::Number>().Int32Value();
    Napi::TypedArray t = info[2].As<Napi::TypedArray>();
    cuda::NcclId id;
    if (t.ByteLength() != id.size()) RFA_THROW("E_ARG", "an NCCL unique id has 128 bytes");
    const char* bytes = static_cast<const char*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    std::copy(bytes, bytes + id.size(), id.begin());
    std::string key = scope + "/g";  // runtime/comm.ts makeGroup's key of ranks 0..world-1
    for (int r = 0; r < world; ++r) key += (r ? "." : "") + std::to_string(r);
    std::lock_guard<std::mutex> lock(g_ids_mu);
    (*g_spanning)[scope] = {key, id};
    return info.Env().Undefined();
  });
}

// (scope, reason), callable from any thread (the main thread on a rank failure): aborts every
// communicator of the runtime `scope`.
RFA_NAPI(AbortAll) {
  RFA_BODY({
    const std::string scope = arg_string(info, 0, "scope"), reason = arg_string(info, 1, "reason");
    cuda::nccl_abort_all(scope, reason);
    cuda::peer_abort(scope, reason);
    return info.Env().Undefined();
  });
}

// (scope), after a failure has settled: the runtime's later communicator uses create fresh ones
// with new ids.
RFA_NAPI(ResetAll) {
  RFA_BODY({
    const std::string scope = arg_string(info, 0, "scope");
    {
      std::lock_guard<std::mutex> lock(g_ids_mu);
      for (auto it = g_ids->begin(); it != g_ids->end();)
        it = scope_of(it->first) == scope ? g_ids->erase(it) : std::next(it);
      ++(*g_generation)[scope];
    }
    cuda::nccl_clear_abort(scope);
    cuda::peer_reset(scope);
    return info.Env().Undefined();
  });
}

}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  std::vector<Entry> entries = KernelBindings<CudaKernels>::entries();
  entries.insert(entries.end(), {{"deviceCount", DeviceCount},
                                 {"deviceInfo", DeviceInfo},
                                 {"peerAccess", PeerAccess},
                                 {"init", Init},
                                 {"alloc", Alloc},
                                 {"free", Free},
                                 {"upload", Upload},
                                 {"uploadBytes", Upload},
                                 {"download", Download},
                                 {"fill", Fill},
                                 {"commSendRecv", CommSendRecv},
                                 {"commAllGather", CommAllGather},
                                 {"commReduceScatter", CommReduceScatter},
                                 {"waitEvent", WaitEvent},
                                 {"sync", Sync},
                                 {"timerMark", TimerMark},
                                 {"timerElapsed", TimerElapsed},
                                 {"peakBytes", PeakBytes},
                                 {"resetPeak", ResetPeak},
                                 {"bytesInUse", BytesInUse},
                                 {"bytesReserved", BytesReserved},
                                 {"ncclUniqueId", NcclUniqueId},
                                 {"ncclRegisterWorldId", NcclRegisterWorldId},
                                 {"abortAll", AbortAll},
                                 {"resetAll", ResetAll}});
  export_functions(env, exports, "cuda", entries);
}

}  // namespace rfa::napi
#endif
