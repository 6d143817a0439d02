#include "cuda/nccl.h"

#include <dlfcn.h>
#include <glob.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "error.h"

namespace rfa::cuda {
namespace {

// NCCL's C ABI, declared here (nccl.h values): results, data types, reduction ops.
using ncclComm_t = void*;
struct ncclUniqueId {
  char internal[128];
};
constexpr int kSuccess = 0;
constexpr int kInProgress = 7;
constexpr int kSum = 0;
int nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return 7;  // ncclFloat32
    case DType::bf16:
      return 9;  // ncclBfloat16
    default:
      return 6;  // ncclFloat16
  }
}

struct Api {
  void* lib = nullptr;
  std::string path, error;
  int (*GetUniqueId)(ncclUniqueId*) = nullptr;
  int (*CommInitRank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  int (*CommDestroy)(ncclComm_t) = nullptr;
  int (*CommAbort)(ncclComm_t) = nullptr;
  int (*CommGetAsyncError)(ncclComm_t, int*) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
  int (*GroupStart)() = nullptr;
  int (*GroupEnd)() = nullptr;
  int (*Send)(const void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  int (*Recv)(void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
  int (*AllGather)(const void*, void*, size_t, int, ncclComm_t, cudaStream_t) = nullptr;
  int (*ReduceScatter)(const void*, void*, size_t, int, int, ncclComm_t, cudaStream_t) = nullptr;
};

std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("RFA_NCCL_LIBRARY")) out.push_back(env);
  out.push_back("libnccl.so.2");
  std::vector<std::string> patterns = {
      "/opt/*/.venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
      "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
      "/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
      "/usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
      "/root/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
  };
  if (const char* venv = std::getenv("VIRTUAL_ENV"))
    patterns.push_back(std::string(venv) + "/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2");
  for (auto& p : patterns) {
    glob_t g;
    if (glob(p.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
    globfree(&g);
  }
  return out;
}

template <typename F>
bool bind(Api& a, F& fn, const char* name) {
  fn = reinterpret_cast<F>(dlsym(a.lib, name));
  if (!fn) a.error = std::string("symbol ") + name + " missing in " + a.path;
  return fn != nullptr;
}

Api& api() {
  static Api* a = [] {
    auto* x = new Api();
    std::string tried;
    for (auto& c : candidates()) {
      x->lib = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (x->lib) {
        x->path = c;
        break;
      }
      tried += (tried.empty() ? "" : ", ") + c;
    }
    if (!x->lib) {
      x->error = "libnccl.so.2 not found (tried " + tried + "; set RFA_NCCL_LIBRARY to its path)";
      return x;
    }
    bool ok = bind(*x, x->GetUniqueId, "ncclGetUniqueId") && bind(*x, x->CommInitRank, "ncclCommInitRank") &&
              bind(*x, x->CommDestroy, "ncclCommDestroy") && bind(*x, x->CommAbort, "ncclCommAbort") &&
              bind(*x, x->CommGetAsyncError, "ncclCommGetAsyncError") &&
              bind(*x, x->GetErrorString, "ncclGetErrorString") &&
              bind(*x, x->GroupStart, "ncclGroupStart") && bind(*x, x->GroupEnd, "ncclGroupEnd") &&
              bind(*x, x->Send, "ncclSend") && bind(*x, x->Recv, "ncclRecv") &&
              bind(*x, x->AllGather, "ncclAllGather") && bind(*x, x->ReduceScatter, "ncclReduceScatter");
    if (!ok) {
      dlclose(x->lib);
      x->lib = nullptr;
    }
    return x;
  }();
  if (!a->lib) RFA_THROW("E_NCCL", a->error);
  return *a;
}

void check(int r, const char* what) {
  if (r != kSuccess && r != kInProgress)
    RFA_THROW("E_NCCL", std::string(what) + ": " + api().GetErrorString(r));
}

// Every live communicator, for nccl_abort_all; and the abort epoch that fails pending inits.
std::mutex g_mu;
std::set<NcclComm*>* g_comms = new std::set<NcclComm*>();
std::map<std::string, std::string>* g_aborted =
    new std::map<std::string, std::string>();  // scope -> first reason
std::atomic<int> g_aborts_running{0};          // ncclCommAbort calls still in flight

}  // namespace

bool nccl_available(std::string* detail) {
  try {
    Api& a = api();
    if (detail) *detail = a.path;
    return true;
  } catch (const NativeError& e) {
    if (detail) *detail = e.what();
    return false;
  }
}

NcclId nccl_unique_id() {
  ncclUniqueId id;
  check(api().GetUniqueId(&id), "ncclGetUniqueId");
  NcclId out;
  std::copy(id.internal, id.internal + 128, out.begin());
  return out;
}

void nccl_abort_all(const std::string& scope, const std::string& reason) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_aborted->emplace(scope, reason);
  for (NcclComm* c : *g_comms)
    if (c->scope() == scope) c->abort(reason);
}

bool nccl_aborted(const std::string& scope, std::string* reason) {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto it = g_aborted->find(scope);
  if (it == g_aborted->end()) return false;
  if (reason) *reason = it->second;
  return true;
}

void nccl_clear_abort(const std::string& scope, int timeout_ms) {
  // Aborted kernels must be gone before new work reaches the GPUs (and before the process exits).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (g_aborts_running.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::lock_guard<std::mutex> lock(g_mu);
  g_aborted->erase(scope);
}

NcclComm::NcclComm(const std::string& scope, const NcclId& id, int nranks, int rank, int device,
                   int timeout_ms)
    : scope_(scope), nranks_(nranks), rank_(rank) {
  Api& a = api();
  // ncclCommInitRank blocks until every member joined; run it on a helper thread so this
  // worker can give up (timeout, or an abort after a peer failed) instead of hanging.
  struct Init {
    std::atomic<bool> done{false};
    int result = kSuccess;
    ncclComm_t comm = nullptr;
  };
  auto st = std::make_shared<Init>();
  ncclUniqueId uid;
  std::copy(id.begin(), id.end(), uid.internal);
  std::thread([st, uid, nranks, rank, device, &a]() mutable {
    cudaSetDevice(device);
    st->result = a.CommInitRank(&st->comm, nranks, uid, rank);
    st->done = true;
  }).detach();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!st->done) {
    std::string reason;
    if (nccl_aborted(scope_, &reason)) RFA_THROW("E_WORKER", "communicator aborted during init: " + reason);
    if (std::chrono::steady_clock::now() > deadline)
      RFA_THROW("E_NCCL", "ncclCommInitRank timed out after " + std::to_string(timeout_ms) + " ms (rank " +
                              std::to_string(rank) + " of " + std::to_string(nranks) + ")");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  check(st->result, "ncclCommInitRank");
  comm_ = st->comm;
  std::lock_guard<std::mutex> lock(g_mu);
  g_comms->insert(this);
}

NcclComm::~NcclComm() {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    g_comms->erase(this);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (comm_ && !aborted_) api().CommDestroy(comm_);
}

void NcclComm::abort(const std::string& reason) {
  void* comm = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_ || !comm_) return;
    aborted_ = true;
    abort_reason_ = reason;
    comm = comm_;
  }
  // ncclCommAbort can wait for the communicator's kernels and proxy threads to wind down: run it
  // off the caller's thread (the main thread's event loop must not stall) and without our lock
  // (the owner's next check must see `aborted_` at once and fail its call).
  Api* a = &api();
  g_aborts_running.fetch_add(1);
  std::thread([a, comm] {
    a->CommAbort(comm);
    g_aborts_running.fetch_sub(1);
  }).detach();
}

bool NcclComm::aborted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aborted_;
}

void NcclComm::check_async_error() {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) RFA_THROW("E_WORKER", "communicator aborted: " + abort_reason_);
  int err = kSuccess;
  check(api().CommGetAsyncError(comm_, &err), "ncclCommGetAsyncError");
  if (err != kSuccess && err != kInProgress)
    RFA_THROW("E_NCCL", std::string("asynchronous NCCL error: ") + api().GetErrorString(err));
}

#define RFA_LIVE_COMM()                  \
  std::lock_guard<std::mutex> lock(mu_); \
  if (aborted_) RFA_THROW("E_WORKER", "communicator aborted: " + abort_reason_)

void NcclComm::group_start() { check(api().GroupStart(), "ncclGroupStart"); }
void NcclComm::group_end() { check(api().GroupEnd(), "ncclGroupEnd"); }

void NcclComm::send(const void* buf, size_t count, DType dtype, int peer, cudaStream_t stream) {
  RFA_LIVE_COMM();
  check(api().Send(buf, count, nccl_type(dtype), peer, comm_, stream), "ncclSend");
}

void NcclComm::recv(void* buf, size_t count, DType dtype, int peer, cudaStream_t stream) {
  RFA_LIVE_COMM();
  check(api().Recv(buf, count, nccl_type(dtype), peer, comm_, stream), "ncclRecv");
}

void NcclComm::all_gather(const void* send, void* recv, size_t count, DType dtype, cudaStream_t stream) {
  RFA_LIVE_COMM();
  check(api().AllGather(send, recv, count, nccl_type(dtype), comm_, stream), "ncclAllGather");
}

void NcclComm::reduce_scatter(const void* send, void* recv, size_t count, DType dtype, cudaStream_t stream) {
  RFA_LIVE_COMM();
  check(api().ReduceScatter(send, recv, count, nccl_type(dtype), kSum, comm_, stream), "ncclReduceScatter");
}

}  // namespace rfa::cuda
