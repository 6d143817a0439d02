// The CPU backend's communicator transport: process-wide buffered mailboxes between worker
// threads, with NCCL's matching rule (messages between one ordered pair of ranks of one
// communicator arrive in the order they were sent). Sends copy and return at once; receives
// block until the matching message arrives, the mailboxes are aborted, or the timeout passes.
#pragma once
#include <cstddef>
#include <string>

namespace rfa::cpu {

void mailbox_send(const std::string& comm, int src, int dst, const void* data, size_t bytes);
// Throws E_WORKER when aborted or timed out, E_ARG when the message size differs from `bytes`.
void mailbox_recv(const std::string& comm, int src, int dst, void* data, size_t bytes, int timeout_ms);
// Wakes every blocked receive with an E_WORKER error carrying `reason`; later receives fail too
// until mailbox_reset().
void mailbox_abort(const std::string& reason);
// Drops every undelivered message and clears the abort (call once no rank is inside a ring).
void mailbox_reset();
size_t mailbox_pending();

}  // namespace rfa::cpu
