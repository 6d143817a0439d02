// How one rank of a communicator moves data to the other members: one interface, one
// implementation per transport. Copy engines (peer_copy.h) between the worker threads of this
// process; NCCL (nccl.h) between processes and machines, or where the GPUs of one process cannot
// read each other's memory. The TypeScript side (runtime/cuda_comm.ts) picks the transport per
// pair of ranks; the bindings parse the arguments and forward them here. Every operation is
// queued on the rank's comm stream (the caller has made it wait for the compute stream), ranks
// are group-local, and operations between one ordered pair match in issue order (NCCL's rule).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

#include "attn_params.h"
#include "cuda/nccl.h"
#include "cuda/peer_copy.h"

namespace rfa::cuda {

// One side of a point-to-point transfer: n elements as `rows` rows of n / rows, `pitch` elements
// apart (one row: a contiguous buffer). Receives are always contiguous.
struct Transfer {
  void* ptr = nullptr;
  size_t n = 0;
  DType dtype = DType::f32;
  int peer = 0;
  size_t rows = 1, pitch = 0;
  std::string label;  // the tensor's shape and dtype, for the receiver's error message
  PeerRegion region() const;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // All sends and receives as one group.
  virtual void send_recv(const std::vector<Transfer>& sends, const std::vector<Transfer>& recvs) = 0;
  // recv (nranks · send.n elements, member-major) gets every member's `send`; the copy engines
  // read strided rows in place, NCCL takes contiguous buffers only.
  virtual void all_gather(const Transfer& send, void* recv) = 0;
  // recv (n floats) gets this member's slice of the float32 sum of every member's `send`
  // (nranks · n). `slot` is n floats of scratch the copy engines pull through (NCCL: unused).
  virtual void reduce_scatter(const float* send, float* recv, size_t n, float* slot) = 0;
};

// Pulls between the worker threads of this process: every operation is a set of point-to-point
// copies (peer_copy.h), collectives included, so NCCL is never loaded.
class CopyEngineTransport final : public Transport {
 public:
  CopyEngineTransport(std::string key, int rank, int nranks, int device, cudaStream_t stream, int timeout_ms)
      : key_(std::move(key)),
        rank_(rank),
        nranks_(nranks),
        device_(device),
        stream_(stream),
        timeout_ms_(timeout_ms) {}
  void send_recv(const std::vector<Transfer>& sends, const std::vector<Transfer>& recvs) override;
  void all_gather(const Transfer& send, void* recv) override;
  void reduce_scatter(const float* send, float* recv, size_t n, float* slot) override;

 private:
  struct Post {
    int peer;
    PeerRegion region;
  };
  // Posts every send first (so no two ranks wait on each other's receives), runs `receive`, then
  // waits until each send has been read.
  template <class Receive>
  void exchange(const std::vector<Post>& sends, Receive&& receive);
  void pull(int peer, void* dst, size_t bytes, const std::string& label);

  std::string key_;
  int rank_, nranks_, device_;
  cudaStream_t stream_;
  int timeout_ms_;
};

class NcclTransport final : public Transport {
 public:
  NcclTransport(NcclComm& comm, cudaStream_t stream) : comm_(comm), stream_(stream) {}
  void send_recv(const std::vector<Transfer>& sends, const std::vector<Transfer>& recvs) override;
  void all_gather(const Transfer& send, void* recv) override;
  void reduce_scatter(const float* send, float* recv, size_t n, float* slot) override;

 private:
  NcclComm& comm_;
  cudaStream_t stream_;
};

}  // namespace rfa::cuda
