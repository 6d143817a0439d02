#include "cuda/transport.h"

#include "cuda/attn_kernels.h"
#include "cuda/check.h"
#include "error.h"

namespace rfa::cuda {

PeerRegion Transfer::region() const {
  const size_t eb = dtype_bytes(dtype);
  return {ptr, n / rows * eb, rows, pitch * eb, label};
}

template <class Receive>
void CopyEngineTransport::exchange(const std::vector<Post>& sends, Receive&& receive) {
  std::vector<PeerTicket> tickets;
  for (auto& x : sends) tickets.push_back(peer_post_send(key_, rank_, x.peer, x.region, device_, stream_));
  receive();
  for (auto& t : tickets) peer_finish_send(key_, t, stream_, timeout_ms_);
}

void CopyEngineTransport::pull(int peer, void* dst, size_t bytes, const std::string& label) {
  peer_recv(key_, peer, rank_, dst, bytes, label, device_, stream_, timeout_ms_);
}

void CopyEngineTransport::send_recv(const std::vector<Transfer>& sends, const std::vector<Transfer>& recvs) {
  std::vector<Post> posts;
  for (auto& x : sends) posts.push_back({x.peer, x.region()});
  exchange(posts, [&] {
    for (auto& x : recvs) pull(x.peer, x.ptr, x.n * dtype_bytes(x.dtype), x.label);
  });
}

// Every member pulls every member's chunk, its own included (a send to itself), from this rank
// round: rank, rank + 1, ..., rank - 1. Pulled in member order, every rank would read member 0
// first (on NVSwitch a GPU's outbound bandwidth is shared by its readers).
void CopyEngineTransport::all_gather(const Transfer& send, void* recv) {
  const PeerRegion region = send.region();
  std::vector<Post> posts;
  for (int j = 0; j < nranks_; ++j) posts.push_back({j, region});
  exchange(posts, [&] {
    for (int i = 0; i < nranks_; ++i) {
      const int j = (rank_ + i) % nranks_;
      pull(j, static_cast<char*>(recv) + size_t(j) * region.bytes(), region.bytes(), send.label);
    }
  });
}

// This rank's own chunk is copied into `recv`, then member j's chunk for this rank is pulled
// through `slot` and added, for j = rank + 1, ..., rank - 1: an order fixed per rank, so the bits
// repeat, and rotated, so that no member's memory is read by every other member at once. All on
// the comm stream, so the sums overlap the compute stream's work as NCCL's do, and the scratch is
// one chunk, not nranks.
void CopyEngineTransport::reduce_scatter(const float* send, float* recv, size_t n, float* slot) {
  if (!slot) RFA_THROW("E_ARG", "a reduce-scatter over the copy engines needs a slot of n floats");
  const size_t bytes = n * sizeof(float);
  std::vector<Post> posts;
  for (int j = 0; j < nranks_; ++j)
    if (j != rank_) posts.push_back({j, PeerRegion{send + size_t(j) * n, bytes, 1, bytes, ""}});
  exchange(posts, [&] {
    if (n > 0)
      RFA_CUDA_CHECK(
          cudaMemcpyAsync(recv, send + size_t(rank_) * n, bytes, cudaMemcpyDeviceToDevice, stream_));
    for (int i = 1; i < nranks_; ++i) {
      pull((rank_ + i) % nranks_, slot, bytes, "");
      if (n > 0) add_f32(recv, slot, int64_t(n), stream_);
    }
  });
}

void NcclTransport::send_recv(const std::vector<Transfer>& sends, const std::vector<Transfer>& recvs) {
  for (auto& x : sends)
    if (x.rows > 1)
      RFA_THROW("E_ARG", "NCCL sends contiguous buffers only (strided rows need the copy engines)");
  comm_.group_start();
  for (auto& x : sends) comm_.send(x.ptr, x.n, x.dtype, x.peer, stream_);
  for (auto& x : recvs) comm_.recv(x.ptr, x.n, x.dtype, x.peer, stream_);
  comm_.group_end();
}

void NcclTransport::all_gather(const Transfer& send, void* recv) {
  if (send.rows > 1)
    RFA_THROW("E_ARG", "NCCL gathers contiguous buffers only (strided rows need the copy engines)");
  comm_.all_gather(send.ptr, recv, send.n, send.dtype, stream_);
}

void NcclTransport::reduce_scatter(const float* send, float* recv, size_t n, float*) {
  comm_.reduce_scatter(send, recv, n, DType::f32, stream_);
}

}  // namespace rfa::cuda
