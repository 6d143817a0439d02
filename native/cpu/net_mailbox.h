// Messages between processes for the CPU backend, so that rings spanning processes run in CI
// without GPUs (a test transport: GPUs use NCCL between processes). A runtime (scope) that spans
// processes has one TCP connection between every two of them, on blocking sockets; a reader
// thread per connection delivers each message into this process's mailboxes (mailbox.cc) under
// the key it was sent with, so a receive waits the same way whether its sender is a thread of
// this process or of another one. Messages between one ordered pair of ranks keep their order:
// one sender thread per rank, one connection per pair of processes, one reader per connection.
//
// Every process of a runtime runs the same sequence of calls (SPMD), numbered by net_begin_call.
// A message carries its sender's call number: one for a call this process has not begun yet
// waits for it, one for a call this process has left is dropped (it belongs to a call that
// failed). An abort carries the call it ends, so the failure of call n on one process fails
// call n on every process and no later call. A connection that closes (its process exited, was
// killed or closed its runtime) aborts the scope for good.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rfa::cpu {

// A process of a networked runtime: where its listener is, and the global ranks it runs.
struct NetProcess {
  std::string host;
  int port = 0;
  int first_rank = 0;
  int ranks = 0;
  std::string name;  // "host pid N", for error messages
};

// Opens this process's listener for `scope` on every interface (port 0: a free one) and returns
// its port. E_RENDEZVOUS when the port cannot be bound.
int net_listen(const std::string& scope, int port);
// Starts connecting process `self` of `procs` to every other one (each connects to the lower
// indices and accepts the higher ones) and returns at once; timeout_ms bounds the connecting and
// every later send.
void net_connect(const std::string& scope, int self, const std::vector<NetProcess>& procs, int timeout_ms);
// Whether every connection is up: false while they are being made, E_RENDEZVOUS naming the
// process that did not connect once the timeout has passed or a connection failed.
bool net_poll(const std::string& scope);
// Whether global rank `dst` of communicator `comm` runs in another process.
bool net_remote(const std::string& comm, int dst);
// Sends one message to the process that runs `dst` (E_WORKER when the scope is aborted or the
// connection failed).
void net_send(const std::string& comm, int src, int dst, const void* data, size_t bytes,
              const std::string& label);
// The scope's next call: messages parked for it are delivered, older ones and a finished call's
// abort are forgotten; an abort already received for it (or a lost connection) applies at once.
void net_begin_call(const std::string& scope, uint64_t call);
// Tells the scope's other processes that its current call failed here (mailbox_abort calls it).
void net_abort_peers(const std::string& scope, const std::string& reason);
// Says goodbye to the other processes and closes the connections; the scope is local again.
void net_close(const std::string& scope);

}  // namespace rfa::cpu
