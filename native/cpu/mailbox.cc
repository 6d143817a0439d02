#include "cpu/mailbox.h"

#include <cstring>
#include <vector>

#include "error.h"
#include "keyed_queues.h"

namespace rfa::cpu {
namespace {

using Mailboxes = KeyedQueues<std::vector<char>>;

Mailboxes& boxes() {
  static Mailboxes* m = new Mailboxes();  // never destroyed: worker threads may outlive statics
  return *m;
}

}  // namespace

void mailbox_send(const std::string& comm, int src, int dst, const void* data, size_t bytes) {
  std::vector<char> msg(bytes);
  if (bytes) std::memcpy(msg.data(), data, bytes);
  boxes().post({comm, src, dst}, std::move(msg));
}

void mailbox_recv(const std::string& comm, int src, int dst, void* data, size_t bytes, int timeout_ms) {
  std::vector<char> msg;
  if (!boxes().take({comm, src, dst}, timeout_ms, msg))
    RFA_THROW("E_WORKER", "rank " + std::to_string(dst) + " timed out after " + std::to_string(timeout_ms) +
                              " ms waiting for a message from rank " + std::to_string(src));
  if (msg.size() != bytes)
    RFA_THROW("E_ARG", "message from rank " + std::to_string(src) + " has " + std::to_string(msg.size()) +
                           " bytes, the receive buffer " + std::to_string(bytes));
  if (bytes) std::memcpy(data, msg.data(), bytes);
}

void mailbox_abort(const std::string& reason) { boxes().abort(reason); }

void mailbox_reset() { boxes().reset(); }

size_t mailbox_pending() { return boxes().pending(); }

}  // namespace rfa::cpu
