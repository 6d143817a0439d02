#include "cuda/peer_copy.h"

#include <set>
#include <utility>

#include "cuda/check.h"
#include "keyed_queues.h"

namespace rfa::cuda {

struct PeerSlot {
  PeerRegion src;
  int src_device = -1;
  cudaEvent_t ready = nullptr;  // recorded by the sender: the data is there
  cudaEvent_t done = nullptr;   // recorded by the receiver after its copy
  bool copied = false;          // set with `done`, under the registry lock
  ~PeerSlot() {
    // Destroying an event that is still pending (or waited on) is allowed: CUDA releases it
    // once the device is past it.
    if (ready) cudaEventDestroy(ready);
    if (done) cudaEventDestroy(done);
  }
};

namespace {

using Registry = KeyedQueues<PeerTicket>;  // posted sends, per (communicator, src, dst)

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: worker threads may outlive statics
  return *r;
}

[[noreturn]] void throw_stuck(int timeout_ms, const std::string& what) {
  RFA_THROW("E_NCCL", "communication stuck: timed out after " + std::to_string(timeout_ms) + " ms " + what);
}

cudaEvent_t new_event() {
  cudaEvent_t e;
  RFA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

// The receiving device reads the sender's memory directly once peer access is on; without it
// cudaMemcpyPeerAsync still works, staged through the host (slow, but correct).
void enable_peer_access(int device, int peer) {
  if (device == peer) return;
  thread_local std::set<std::pair<int, int>> done;
  if (!done.insert({device, peer}).second) return;
  int can = 0;
  RFA_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, device, peer));
  if (!can) return;
  const cudaError_t err = cudaDeviceEnablePeerAccess(peer, 0);
  if (err == cudaErrorPeerAccessAlreadyEnabled)
    cudaGetLastError();
  else
    RFA_CUDA_CHECK(err);
}

// A copy of `from`'s rows, back to back, into `dst`. The peer form names both devices, so, like
// cudaMemcpyPeerAsync, it works whether or not peer access is on (a 2-D cudaMemcpyDefault copy
// relies on unified addressing to tell the devices apart).
cudaMemcpy3DPeerParms pitched_peer_copy(void* dst, int dst_device, const PeerRegion& from, int src_device) {
  cudaMemcpy3DPeerParms p = {};
  p.srcPtr = make_cudaPitchedPtr(const_cast<void*>(from.ptr), from.pitch, from.row_bytes, from.rows);
  p.srcDevice = src_device;
  p.dstPtr = make_cudaPitchedPtr(dst, from.row_bytes, from.row_bytes, from.rows);
  p.dstDevice = dst_device;
  p.extent = make_cudaExtent(from.row_bytes, from.rows, 1);
  return p;
}

}  // namespace

PeerTicket peer_post_send(const std::string& comm, int src, int dst, const PeerRegion& data, int device,
                          cudaStream_t stream) {
  auto slot = std::make_shared<PeerSlot>();
  slot->src = data;
  slot->src_device = device;
  slot->ready = new_event();
  RFA_CUDA_CHECK(cudaEventRecord(slot->ready, stream));
  registry().post({comm, src, dst}, slot);
  return slot;
}

void peer_recv(const std::string& comm, int src, int dst, void* data, size_t bytes, const std::string& label,
               int device, cudaStream_t stream, int timeout_ms) {
  PeerTicket slot;
  if (!registry().take({comm, src, dst}, timeout_ms, slot))
    throw_stuck(timeout_ms, "(rank " + std::to_string(dst) + " waiting for a send from rank " +
                                std::to_string(src) + ")");
  // A mismatch still completes the handshake (done = ready), so the sender is not left waiting.
  const PeerRegion& from = slot->src;
  const bool size_ok = from.bytes() == bytes;
  if (size_ok) {
    enable_peer_access(device, slot->src_device);
    RFA_CUDA_CHECK(cudaStreamWaitEvent(stream, slot->ready, 0));
    if (bytes && from.rows <= 1)
      RFA_CUDA_CHECK(cudaMemcpyPeerAsync(data, device, from.ptr, slot->src_device, bytes, stream));
    else if (bytes) {  // the rows land back to back
      const cudaMemcpy3DPeerParms copy = pitched_peer_copy(data, device, from, slot->src_device);
      RFA_CUDA_CHECK(cudaMemcpy3DPeerAsync(&copy, stream));
    }
  }
  cudaEvent_t done = new_event();
  RFA_CUDA_CHECK(cudaEventRecord(done, stream));
  registry().update([&] {
    slot->done = done;
    slot->copied = true;
  });
  if (!size_ok) RFA_THROW("E_SHAPE", shape_mismatch(src, from.label, from.bytes(), dst, label, bytes));
}

void peer_finish_send(const std::string& comm, const PeerTicket& ticket, cudaStream_t stream,
                      int timeout_ms) {
  if (!registry().wait_until(Registry::scope_of(comm), timeout_ms, [&] { return ticket->copied; }))
    throw_stuck(timeout_ms, "(a send was never received)");
  RFA_CUDA_CHECK(cudaStreamWaitEvent(stream, ticket->done, 0));
}

void peer_abort(const std::string& scope, const std::string& reason) { registry().abort(scope, reason); }

void peer_reset(const std::string& scope) { registry().reset(scope); }

}  // namespace rfa::cuda
