#include "cpu/mailbox.h"

#include <cstring>
#include <vector>

#include "error.h"
#include "keyed_queues.h"
#include "cpu/net_mailbox.h"

namespace rfa::cpu {
namespace {

struct Message {
  std::vector<char> bytes;
  std::string label;
};

using Mailboxes = KeyedQueues<Message>;

Mailboxes& boxes() {
  static Mailboxes* m = new Mailboxes();  // never destroyed: worker threads may outlive statics
  return *m;
}

}  // namespace

void mailbox_send(const std::string& comm, int src, int dst, const void* data, size_t bytes,
                  const std::string& label) {
  if (net_remote(comm, dst)) return net_send(comm, src, dst, data, bytes, label);
  Message msg{std::vector<char>(bytes), label};
  if (bytes) std::memcpy(msg.bytes.data(), data, bytes);
  boxes().post({comm, src, dst}, std::move(msg));
}

void mailbox_recv(const std::string& comm, int src, int dst, void* data, size_t bytes,
                  const std::string& label, int timeout_ms) {
  Message msg;
  if (!boxes().take({comm, src, dst}, timeout_ms, msg))
    RFA_THROW("E_WORKER", "rank " + std::to_string(dst) + " timed out after " + std::to_string(timeout_ms) +
                              " ms waiting for a message from rank " + std::to_string(src));
  if (msg.bytes.size() != bytes)
    RFA_THROW("E_SHAPE", shape_mismatch(src, msg.label, msg.bytes.size(), dst, label, bytes));
  if (bytes) std::memcpy(data, msg.bytes.data(), bytes);
}

void mailbox_abort(const std::string& scope, const std::string& reason) {
  boxes().abort(scope, reason);
  net_abort_peers(scope, reason);
}

void mailbox_deliver(const std::string& comm, int src, int dst, std::vector<char> bytes, std::string label) {
  boxes().post({comm, src, dst}, Message{std::move(bytes), std::move(label)});
}

void mailbox_abort_here(const std::string& scope, const std::string& reason) { boxes().abort(scope, reason); }

void mailbox_reset(const std::string& scope) { boxes().reset(scope); }

}  // namespace rfa::cpu
