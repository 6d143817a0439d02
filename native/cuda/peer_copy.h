// Point-to-point transfers between the worker threads of this process through the GPUs' copy
// engines (cudaMemcpyPeerAsync; cudaMemcpy3DPeerAsync for strided rows), no SM time: NCCL's send/recv
// kernels occupy SMs the attention kernels they overlap would use. Between ranks on the same GPU
// the driver runs the copy as an SM kernel instead (fast, but it waits for free SMs; measured:
// benchmark/RESULTS.md). One process drives every GPU, so a receiver can read the sender's buffer
// directly once it knows the pointer and an event that says the data is ready.
//
// Matching follows NCCL's rule: transfers between one ordered pair of ranks of one communicator
// pair up in issue order. A send posts {region, ready event} and returns a ticket; the receiver
// takes the oldest post of its pair, makes its comm stream wait for the ready event, copies
// (pull), and records a done event; the sender's finish() makes its comm stream wait for that
// event, so the send buffer is not reused before it has been read. Only host threads ever wait
// on each other (bounded by a timeout and by peer_abort); every GPU-side wait is on an event
// already recorded, so the GPU cannot hang on a peer that failed. A send's call returns only
// once its receiver has taken it, so a send must be received by the peer's call at the same
// position of their common sequence (true of every ring here: each step is one call on every
// rank); the CPU backend's mailboxes, whose sends return at once, are laxer.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <string>

namespace rfa::cuda {

struct PeerSlot;
using PeerTicket = std::shared_ptr<PeerSlot>;

// What a send reads: `rows` runs of `row_bytes` bytes, `pitch` (>= row_bytes, checked by the
// caller) bytes apart (k or v sliced from a packed qkv: one row per token), so a strided tensor
// needs no packing copy; one row is a plain contiguous buffer. The receiver always gets the bytes
// contiguous.
struct PeerRegion {
  const void* ptr = nullptr;
  size_t row_bytes = 0;
  size_t rows = 1;
  size_t pitch = 0;
  std::string label;  // the tensor's shape and dtype, for the receiver's error message
  size_t bytes() const { return row_bytes * rows; }
};

// `stream` is the sender's comm stream (its ready event is recorded there); the current device
// must be `device`.
PeerTicket peer_post_send(const std::string& comm, int src, int dst, const PeerRegion& data, int device,
                          cudaStream_t stream);
// Blocks until the matching send is posted (E_WORKER on abort, E_NCCL on timeout, E_SHAPE on a
// size mismatch, naming both labels), then queues the copy on `stream` (the receiver's comm stream).
void peer_recv(const std::string& comm, int src, int dst, void* data, size_t bytes, const std::string& label,
               int device, cudaStream_t stream, int timeout_ms);
// Blocks until the receiver has queued the copy, then makes `stream` wait for it.
void peer_finish_send(const std::string& comm, const PeerTicket& ticket, cudaStream_t stream, int timeout_ms);

// Wakes every blocked transfer of the runtime `scope` (keyed_queues.h) with an E_WORKER error
// carrying `reason`; its later ones fail too until peer_reset(scope) (called once none of its
// ranks is inside a transfer), which drops its unmatched posts.
void peer_abort(const std::string& scope, const std::string& reason);
void peer_reset(const std::string& scope);

}  // namespace rfa::cuda
