// The registry both communicator transports between worker threads are built on: process-wide
// FIFO queues keyed by (communicator, src rank, dst rank), so items of one ordered pair are taken
// in the order they were posted (NCCL's matching rule), and the abort protocol both follow:
// abort(scope, reason) wakes every waiter of that scope with E_WORKER (the first reason is kept)
// and fails the scope's later posts and waits until reset(scope), which also drops whatever the
// scope posted and nobody took. A scope is a runtime: the part of a communicator's key before its
// first '/' (runtime/comm.ts makes the keys), so one runtime's failure never touches another's
// messages. The CPU backend's
// mailboxes queue message bytes (cpu/mailbox.cc); the copy-engine transport queues send tickets
// (cuda/peer_copy.cc).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <iterator>
#include <tuple>
#include <utility>

#include "error.h"

namespace rfa {

// The message of a transfer whose sizes differ: in SPMD code, ranks that passed local tensors of
// different shapes. Labels are "(1, 128, 2, 16) float32" as the TypeScript side writes them.
inline std::string shape_mismatch(int src, const std::string& sent, size_t sent_bytes, int dst,
                                  const std::string& expected, size_t expected_bytes) {
  const auto show = [](const std::string& label, size_t bytes) {
    return label.empty() ? std::to_string(bytes) + " bytes"
                         : label + " (" + std::to_string(bytes) + " bytes)";
  };
  return "ranks passed local tensors of different shapes: rank " + std::to_string(src) + " sent a block of " +
         show(sent, sent_bytes) + ", rank " + std::to_string(dst) + " expected " +
         show(expected, expected_bytes) +
         " (every rank of a ring must pass q, k, v and dout of the same local shape and dtype)";
}

template <class Item>
class KeyedQueues {
 public:
  using Key = std::tuple<std::string, int, int>;  // (communicator, src, dst)

  // The runtime a communicator belongs to.
  static std::string scope_of(const std::string& comm) { return comm.substr(0, comm.find('/')); }

  // Appends to the queue of `key`.
  void post(const Key& key, Item item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      throw_if_aborted(scope_of(std::get<0>(key)));
      queues_[key].push_back(std::move(item));
    }
    cv_.notify_all();
  }

  // Takes the oldest item of `key`'s queue into `out`, waiting up to timeout_ms: false on timeout.
  bool take(const Key& key, int timeout_ms, Item& out) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& q = queues_[key];
    if (!wait(lock, scope_of(std::get<0>(key)), timeout_ms, [&] { return !q.empty(); })) return false;
    out = std::move(q.front());
    q.pop_front();
    return true;
  }

  // Runs `change` under the registry's lock, then wakes the waiters of wait_until.
  template <class Change>
  void update(Change&& change) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      change();
    }
    cv_.notify_all();
  }

  // Waits until `ready()` (evaluated under the lock) holds or `scope` is aborted: false on timeout.
  template <class Ready>
  bool wait_until(const std::string& scope, int timeout_ms, Ready ready) {
    std::unique_lock<std::mutex> lock(mu_);
    return wait(lock, scope, timeout_ms, ready);
  }

  void abort(const std::string& scope, const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      aborted_.emplace(scope, reason);  // keeps the first reason
    }
    cv_.notify_all();
  }

  void reset(const std::string& scope) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = queues_.begin(); it != queues_.end();)
      it = scope_of(std::get<0>(it->first)) == scope ? queues_.erase(it) : std::next(it);
    aborted_.erase(scope);
  }

 private:
  template <class Ready>
  bool wait(std::unique_lock<std::mutex>& lock, const std::string& scope, int timeout_ms, Ready ready) {
    const bool ok = cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return aborted_.count(scope) || ready(); });
    throw_if_aborted(scope);
    return ok;
  }
  void throw_if_aborted(const std::string& scope) const {
    const auto it = aborted_.find(scope);
    if (it != aborted_.end()) RFA_THROW("E_WORKER", "communicator aborted: " + it->second);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::deque<Item>> queues_;
  std::map<std::string, std::string> aborted_;  // scope -> the first reason
};

}  // namespace rfa
