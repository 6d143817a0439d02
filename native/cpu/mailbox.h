// The CPU backend's communicator transport: process-wide buffered mailboxes between worker
// threads, with NCCL's matching rule (messages between one ordered pair of ranks of one
// communicator arrive in the order they were sent). Sends copy and return at once; receives
// block until the matching message arrives, the mailboxes are aborted, or the timeout passes.
// A runtime that spans processes sends to the ranks of other processes over net_mailbox.h.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace rfa::cpu {

// `label` describes the sent tensor (shape and dtype) for the receiver's error message.
void mailbox_send(const std::string& comm, int src, int dst, const void* data, size_t bytes,
                  const std::string& label);
// Throws E_WORKER when aborted or timed out, E_SHAPE when the message size differs from `bytes`
// (naming both labels: ranks that passed local tensors of different shapes).
void mailbox_recv(const std::string& comm, int src, int dst, void* data, size_t bytes,
                  const std::string& label, int timeout_ms);
// Wakes every blocked receive of the runtime `scope` with an E_WORKER error carrying `reason`;
// its later receives fail too until mailbox_reset(scope).
void mailbox_abort(const std::string& scope, const std::string& reason);
// Drops the scope's undelivered messages and clears its abort (call once none of its ranks is inside a ring).
void mailbox_reset(const std::string& scope);

// For net_mailbox.cc: a message that came from another process, into this process's mailbox of
// (comm, src, dst) (E_WORKER when the scope is aborted); and an abort that came from another
// process, applied here only.
void mailbox_deliver(const std::string& comm, int src, int dst, std::vector<char> bytes, std::string label);
void mailbox_abort_here(const std::string& scope, const std::string& reason);

}  // namespace rfa::cpu
