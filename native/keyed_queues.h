// The registry both communicator transports between worker threads are built on: process-wide
// FIFO queues keyed by (communicator, src rank, dst rank), so items of one ordered pair are taken
// in the order they were posted (NCCL's matching rule), and the abort protocol both follow:
// abort(reason) wakes every waiter with E_WORKER (the first reason is kept) and fails later
// posts and waits until reset(), which also drops whatever was never taken. The CPU backend's
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
#include <tuple>
#include <utility>

#include "error.h"

namespace rfa {

template <class Item>
class KeyedQueues {
 public:
  using Key = std::tuple<std::string, int, int>;  // (communicator, src, dst)

  // Appends to the queue of `key`.
  void post(const Key& key, Item item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      throw_if_aborted();
      queues_[key].push_back(std::move(item));
    }
    cv_.notify_all();
  }

  // Takes the oldest item of `key`'s queue into `out`, waiting up to timeout_ms: false on timeout.
  bool take(const Key& key, int timeout_ms, Item& out) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& q = queues_[key];
    if (!wait(lock, timeout_ms, [&] { return !q.empty(); })) return false;
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

  // Waits until `ready()` (evaluated under the lock) holds: false on timeout.
  template <class Ready>
  bool wait_until(int timeout_ms, Ready ready) {
    std::unique_lock<std::mutex> lock(mu_);
    return wait(lock, timeout_ms, ready);
  }

  void abort(const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!aborted_) reason_ = reason;
      aborted_ = true;
    }
    cv_.notify_all();
  }

  void reset() {
    std::lock_guard<std::mutex> lock(mu_);
    queues_.clear();
    aborted_ = false;
    reason_.clear();
  }

  // Items posted and not yet taken.
  size_t pending() {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (auto& kv : queues_) n += kv.second.size();
    return n;
  }

 private:
  template <class Ready>
  bool wait(std::unique_lock<std::mutex>& lock, int timeout_ms, Ready ready) {
    const bool ok = cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return aborted_ || ready(); });
    throw_if_aborted();
    return ok;
  }
  void throw_if_aborted() const {
    if (aborted_) RFA_THROW("E_WORKER", "communicator aborted: " + reason_);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::deque<Item>> queues_;
  bool aborted_ = false;
  std::string reason_;
};

}  // namespace rfa
