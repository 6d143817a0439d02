// NCCL, loaded at run time with dlopen and self-declared prototypes (its C ABI is stable:
// ncclUniqueId is 128 bytes, enums are ints), so the addon builds and loads without NCCL and
// the CPU backend never needs it. Search order: $RFA_NCCL_LIBRARY, libnccl.so.2 on the loader
// path, then the nvidia-nccl wheel of a Python installation.
#pragma once
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "attn_params.h"

namespace rfa::cuda {

using NcclId = std::array<char, 128>;

bool nccl_available(std::string* detail);
NcclId nccl_unique_id();
// Aborts every communicator of the runtime `scope` (callable from any thread); their owners' next
// operation or wait fails with E_WORKER carrying `reason`. Until nccl_clear_abort(scope), the
// scope's inits in flight fail and it may create no new communicator (a rank that arrives late
// must not start one its failed peers will never join). Other runtimes are untouched.
void nccl_abort_all(const std::string& scope, const std::string& reason);
bool nccl_aborted(const std::string& scope, std::string* reason);
// Waits (at most timeout_ms) for aborts still winding down, then allows the scope new communicators.
void nccl_clear_abort(const std::string& scope, int timeout_ms = 10000);

class NcclComm {
 public:
  // Joins the communicator `id` of the runtime `scope` as `rank` of `nranks` on the calling
  // thread's device. Every member calls this concurrently. The wait is bounded by timeout_ms and
  // by nccl_abort_all(scope).
  NcclComm(const std::string& scope, const NcclId& id, int nranks, int rank, int device, int timeout_ms);
  ~NcclComm();  // never throws
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  void group_start();
  void group_end();
  void send(const void* buf, size_t count, DType dtype, int peer, cudaStream_t stream);
  void recv(void* buf, size_t count, DType dtype, int peer, cudaStream_t stream);
  void all_gather(const void* send, void* recv, size_t count_per_rank, DType dtype, cudaStream_t stream);
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                      cudaStream_t stream);  // sum
  // Throws if the communicator was aborted or NCCL reports an asynchronous error.
  void check_async_error();
  bool aborted() const;
  void abort(const std::string& reason);
  const std::string& scope() const { return scope_; }

 private:
  const std::string scope_;
  void* comm_ = nullptr;  // ncclComm_t
  int nranks_;
  int rank_;
  mutable std::mutex mu_;
  bool aborted_ = false;
  std::string abort_reason_;
};

}  // namespace rfa::cuda
