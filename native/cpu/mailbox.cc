#include "cpu/mailbox.h"

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "error.h"

namespace rfa::cpu {
namespace {

using Key = std::tuple<std::string, int, int>;  // (communicator, src, dst)

struct Mailboxes {
  std::mutex mu;
  std::condition_variable cv;
  std::map<Key, std::deque<std::vector<char>>> queues;
  bool aborted = false;
  std::string abort_reason;
};

Mailboxes& boxes() {
  static Mailboxes* m = new Mailboxes();  // never destroyed: worker threads may outlive statics
  return *m;
}

}  // namespace

void mailbox_send(const std::string& comm, int src, int dst, const void* data, size_t bytes) {
  Mailboxes& m = boxes();
  std::vector<char> msg(bytes);
  if (bytes) std::memcpy(msg.data(), data, bytes);
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.aborted) RFA_THROW("E_WORKER", "communicator aborted: " + m.abort_reason);
    m.queues[Key(comm, src, dst)].push_back(std::move(msg));
  }
  m.cv.notify_all();
}

void mailbox_recv(const std::string& comm, int src, int dst, void* data, size_t bytes, int timeout_ms) {
  Mailboxes& m = boxes();
  std::unique_lock<std::mutex> lock(m.mu);
  auto& q = m.queues[Key(comm, src, dst)];
  const bool ready = m.cv.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                   [&] { return m.aborted || !q.empty(); });
  if (m.aborted) RFA_THROW("E_WORKER", "communicator aborted: " + m.abort_reason);
  if (!ready)
    RFA_THROW("E_WORKER", "rank " + std::to_string(dst) + " timed out after " + std::to_string(timeout_ms) +
                              " ms waiting for a message from rank " + std::to_string(src));
  std::vector<char> msg = std::move(q.front());
  q.pop_front();
  if (msg.size() != bytes)
    RFA_THROW("E_ARG", "message from rank " + std::to_string(src) + " has " + std::to_string(msg.size()) +
                           " bytes, the receive buffer " + std::to_string(bytes));
  if (bytes) std::memcpy(data, msg.data(), bytes);
}

void mailbox_abort(const std::string& reason) {
  Mailboxes& m = boxes();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.aborted) m.abort_reason = reason;
    m.aborted = true;
  }
  m.cv.notify_all();
}

void mailbox_reset() {
  Mailboxes& m = boxes();
  std::lock_guard<std::mutex> lock(m.mu);
  m.queues.clear();
  m.aborted = false;
  m.abort_reason.clear();
}

size_t mailbox_pending() {
  Mailboxes& m = boxes();
  std::lock_guard<std::mutex> lock(m.mu);
  size_t n = 0;
  for (auto& kv : m.queues) n += kv.second.size();
  return n;
}

}  // namespace rfa::cpu
