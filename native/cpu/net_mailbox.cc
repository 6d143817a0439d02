#include "cpu/net_mailbox.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "cpu/mailbox.h"
#include "error.h"

namespace rfa::cpu {
namespace {

enum Kind : uint32_t { kHello = 1, kMessage = 2, kAbort = 3, kBye = 4 };

// Every frame: this header, then `comm_len` bytes of communicator key (hello: the scope), then
// `label_len` bytes of label (abort: the reason), then `bytes` bytes of payload. Host byte order:
// both ends run this addon on the same architecture.
struct Header {
  uint32_t kind;
  uint32_t comm_len;
  uint32_t label_len;
  int32_t src;  // hello: the process index of the connecting side
  int32_t dst;
  uint32_t reserved;
  uint64_t call;
  uint64_t bytes;
};

struct Conn {
  int fd = -1;
  std::mutex write_mu;
  bool said_bye = false;  // the peer closed its runtime (guarded by the registry lock)
};

struct Parked {
  uint64_t call;
  std::string comm, label;
  int src, dst;
  std::vector<char> bytes;
};

// One networked runtime. Fields below `procs` are guarded by g_mu.
struct Net {
  std::string scope;
  int self = -1;
  std::vector<NetProcess> procs;
  int listen_fd = -1;
  int send_timeout_ms = 60000;
  std::vector<std::shared_ptr<Conn>> conns;  // by process index; null until connected
  uint64_t call = 0;
  std::map<uint64_t, std::string> aborts;  // call -> the first reason, raised here or received
  std::optional<uint64_t> aborted_call;    // the call this process's mailboxes were aborted for
  std::string broken;                      // why the scope is unusable, once a connection is lost
  std::deque<Parked> parked;               // messages for calls not begun yet, in arrival order
  bool accepting = false;                  // the acceptor thread owns listen_fd
  bool closing = false;
  std::chrono::steady_clock::time_point connect_deadline;
  std::string connect_error;  // why a connection to a lower index failed
};

std::mutex g_mu;
auto* g_nets = new std::map<std::string, std::shared_ptr<Net>>();  // never destroyed: threads outlive statics

std::string scope_of(const std::string& comm) { return comm.substr(0, comm.find('/')); }

std::string errno_text() { return std::strerror(errno); }

bool write_full(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

bool read_full(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= size_t(r);
  }
  return true;
}

bool write_frame(Conn& c, const Header& h, const std::string& comm, const std::string& label,
                 const void* payload) {
  std::lock_guard<std::mutex> lock(c.write_mu);
  if (c.fd < 0) return false;
  return write_full(c.fd, &h, sizeof h) && write_full(c.fd, comm.data(), comm.size()) &&
         write_full(c.fd, label.data(), label.size()) && (h.bytes == 0 || write_full(c.fd, payload, h.bytes));
}

int process_of(const Net& n, int rank) {
  for (size_t p = 0; p < n.procs.size(); ++p)
    if (rank >= n.procs[p].first_rank && rank < n.procs[p].first_rank + n.procs[p].ranks) return int(p);
  return -1;
}

std::string ranks_of(const NetProcess& p) {
  return p.ranks == 1
             ? "rank " + std::to_string(p.first_rank)
             : "ranks " + std::to_string(p.first_rank) + ".." + std::to_string(p.first_rank + p.ranks - 1);
}

// Under g_mu: this process's mailboxes of the scope fail their waits with `reason` for call `call`.
void abort_here_locked(Net& n, uint64_t call, const std::string& reason) {
  n.aborted_call = call;
  mailbox_abort_here(n.scope, reason);
}

void deliver_locked(Net& n, Parked m) {
  try {
    mailbox_deliver(m.comm, m.src, m.dst, std::move(m.bytes), std::move(m.label));
  } catch (const NativeError&) {
    // The scope is aborted: its receivers are failing this call anyway.
  }
}

void set_timeouts(int fd, int send_ms) {
  timeval tv{send_ms / 1000, (send_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Reads frames from process `peer` until the connection ends.
void read_loop(std::shared_ptr<Net> net, std::shared_ptr<Conn> conn, int peer) {
  const int fd = conn->fd;
  for (;;) {
    Header h;
    if (!read_full(fd, &h, sizeof h)) break;
    Parked m{h.call, std::string(h.comm_len, '\0'), std::string(h.label_len, '\0'), h.src, h.dst, {}};
    m.bytes.resize(h.bytes);
    if (!read_full(fd, m.comm.data(), h.comm_len) || !read_full(fd, m.label.data(), h.label_len) ||
        (h.bytes && !read_full(fd, m.bytes.data(), h.bytes)))
      break;
    std::lock_guard<std::mutex> lock(g_mu);
    if (net->closing) continue;  // this runtime is closed: nobody will take it
    if (h.kind == kMessage) {
      if (m.call == net->call)
        deliver_locked(*net, std::move(m));
      else if (m.call > net->call)
        net->parked.push_back(std::move(m));
    } else if (h.kind == kAbort) {
      net->aborts.emplace(m.call, m.label);
      if (m.call == net->call) abort_here_locked(*net, m.call, m.label);
    } else if (h.kind == kBye) {
      conn->said_bye = true;
    }
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (!net->closing && net->broken.empty()) {
    const NetProcess& p = net->procs[size_t(peer)];
    net->broken =
        "the connection to process " + std::to_string(peer) + " (" + ranks_of(p) + ", " + p.name +
        ") is gone: " +
        (conn->said_bye ? "it closed its runtime" : "the process exited, was killed or lost the network");
    // A process that closed its runtime has finished every call it ran, so this process may still
    // be finishing the last one on messages already here: only later calls fail.
    if (!conn->said_bye) abort_here_locked(*net, net->call, net->broken);
  }
  std::lock_guard<std::mutex> wlock(conn->write_mu);
  ::close(conn->fd);
  conn->fd = -1;
}

void start_reader(const std::shared_ptr<Net>& net, const std::shared_ptr<Conn>& conn, int peer) {
  std::thread(read_loop, net, conn, peer).detach();
}

// Accepts the connections of the higher-indexed processes; each opens with a hello naming it.
void accept_loop(std::shared_ptr<Net> net, int listen_fd) {
  for (;;) {
    const int fd = ::accept(listen_fd, nullptr, nullptr);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      break;
    }
    timeval tv{5, 0};  // a hello arrives at once; anything else is not one of ours
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Header h;
    std::string scope;
    bool ok = read_full(fd, &h, sizeof h) && h.kind == kHello && h.comm_len < 4096;
    if (ok) {
      scope.resize(h.comm_len);
      ok = read_full(fd, scope.data(), h.comm_len);
    }
    timeval none{0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    std::unique_lock<std::mutex> lock(g_mu);
    const int peer = h.src;
    if (!ok || scope != net->scope || net->closing || peer <= net->self ||
        size_t(peer) >= net->procs.size() || net->conns[size_t(peer)]) {
      lock.unlock();
      ::close(fd);
      continue;
    }
    auto conn = std::make_shared<Conn>();
    conn->fd = fd;
    set_timeouts(fd, net->send_timeout_ms);
    net->conns[size_t(peer)] = conn;
    start_reader(net, conn, peer);
  }
  ::close(listen_fd);
}

std::shared_ptr<Net> find_locked(const std::string& scope) {
  const auto it = g_nets->find(scope);
  return it == g_nets->end() ? nullptr : it->second;
}

int connect_to(const NetProcess& p, const std::chrono::steady_clock::time_point deadline,
               std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string port = std::to_string(p.port);
  while (true) {
    addrinfo* res = nullptr;
    const int gai = getaddrinfo(p.host.c_str(), port.c_str(), &hints, &res);
    if (gai != 0) {
      *error = std::string("cannot resolve ") + p.host + ": " + gai_strerror(gai);
    } else {
      for (addrinfo* a = res; a; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          freeaddrinfo(res);
          return fd;
        }
        *error = errno_text();
        ::close(fd);
      }
      freeaddrinfo(res);
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// A listener on every interface, IPv6 and IPv4 alike where the host has IPv6 (a process may
// reach the store, and so be reached, by either), else IPv4 only.
int open_listener(int port, std::string* error) {
  const int one = 1, zero = 0;
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons(uint16_t(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd, 64) == 0) return fd;
    ::close(fd);
  }
  fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    *error = errno_text();
    return -1;
  }
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(uint16_t(port));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::listen(fd, 64) == 0) return fd;
  *error = errno_text();
  ::close(fd);
  return -1;
}

int local_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return addr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port)
                                    : ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

}  // namespace

int net_listen(const std::string& scope, int port) {
  std::string error;
  const int fd = open_listener(port, &error);
  if (fd < 0)
    RFA_THROW("E_RENDEZVOUS",
              "cannot listen for the CPU mailbox on port " + std::to_string(port) + ": " + error);
  auto net = std::make_shared<Net>();
  net->scope = scope;
  net->listen_fd = fd;
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_nets->count(scope)) {
    ::close(fd);
    RFA_THROW("E_ARG", "the runtime " + scope + " already has a CPU mailbox listener");
  }
  (*g_nets)[scope] = net;
  return local_port(fd);
}

void net_connect(const std::string& scope, int self, const std::vector<NetProcess>& procs, int timeout_ms) {
  std::shared_ptr<Net> net;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    net = find_locked(scope);
    if (!net) RFA_THROW("E_ARG", "net_connect before net_listen for " + scope);
    if (net->accepting) RFA_THROW("E_ARG", "the runtime " + scope + " is already connecting");
    if (self < 0 || size_t(self) >= procs.size()) RFA_THROW("E_ARG", "process index out of range");
    net->self = self;
    net->procs = procs;
    net->send_timeout_ms = timeout_ms;
    net->conns.assign(procs.size(), nullptr);
    net->accepting = true;
    net->connect_deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  }
  std::thread(accept_loop, net, net->listen_fd).detach();
  // The connections to lower indices are made on a thread of their own, so that the caller (the
  // main thread, whose event loop also serves the rendezvous store) never blocks: net_poll says
  // when every connection is up.
  std::thread([net, self, timeout_ms] {
    for (int p = 0; p < self; ++p) {
      const NetProcess& to = net->procs[size_t(p)];
      std::string error = "no answer";
      const int fd = connect_to(to, net->connect_deadline, &error);
      std::lock_guard<std::mutex> lock(g_mu);
      if (fd < 0 || net->closing) {
        if (fd >= 0) ::close(fd);
        net->connect_error = "process " + std::to_string(self) +
                             " could not connect to the CPU mailbox of process " + std::to_string(p) + " (" +
                             to.name + ", at " + to.host + ":" + std::to_string(to.port) + ") within " +
                             std::to_string(timeout_ms) + " ms: " + error;
        return;
      }
      auto conn = std::make_shared<Conn>();
      conn->fd = fd;
      set_timeouts(fd, timeout_ms);
      const Header hello{kHello, uint32_t(net->scope.size()), 0, self, p, 0, 0, 0};
      if (!write_frame(*conn, hello, net->scope, "", nullptr)) {
        net->connect_error = "process " + std::to_string(self) + " lost its new connection to process " +
                             std::to_string(p) + ": " + errno_text();
        ::close(fd);
        return;
      }
      net->conns[size_t(p)] = conn;
      start_reader(net, conn, p);
    }
  }).detach();
}

bool net_poll(const std::string& scope) {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto net = find_locked(scope);
  if (!net || !net->accepting) RFA_THROW("E_ARG", "net_poll before net_connect for " + scope);
  if (!net->connect_error.empty()) RFA_THROW("E_RENDEZVOUS", net->connect_error);
  int missing = -1;
  for (size_t p = 0; p < net->procs.size(); ++p)
    if (int(p) != net->self && !net->conns[p]) {
      missing = int(p);
      break;
    }
  if (missing < 0) return true;
  if (std::chrono::steady_clock::now() < net->connect_deadline) return false;
  const NetProcess& p = net->procs[size_t(missing)];
  RFA_THROW("E_RENDEZVOUS", "process " + std::to_string(missing) + " (" + p.name + ") and process " +
                                std::to_string(net->self) + " did not connect their CPU mailboxes within " +
                                std::to_string(net->send_timeout_ms) + " ms");
}

bool net_remote(const std::string& comm, int dst) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_nets->empty()) return false;
  const auto net = find_locked(scope_of(comm));
  if (!net || net->procs.empty()) return false;
  const int p = process_of(*net, dst);
  return p >= 0 && p != net->self;
}

void net_send(const std::string& comm, int src, int dst, const void* data, size_t bytes,
              const std::string& label) {
  std::shared_ptr<Conn> conn;
  uint64_t call = 0;
  int peer = -1;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    const auto net = find_locked(scope_of(comm));
    if (!net) RFA_THROW("E_WORKER", "the runtime " + scope_of(comm) + " is closed");
    if (!net->broken.empty()) RFA_THROW("E_WORKER", "communicator aborted: " + net->broken);
    if (net->aborted_call == net->call) {
      const auto it = net->aborts.find(net->call);
      RFA_THROW("E_WORKER",
                "communicator aborted: " + (it == net->aborts.end() ? std::string("") : it->second));
    }
    peer = process_of(*net, dst);
    conn = peer >= 0 ? net->conns[size_t(peer)] : nullptr;
    call = net->call;
  }
  if (!conn) RFA_THROW("E_WORKER", "rank " + std::to_string(dst) + " is in no connected process");
  const Header h{kMessage, uint32_t(comm.size()), uint32_t(label.size()), src, dst, 0, call, uint64_t(bytes)};
  if (!write_frame(*conn, h, comm, label, data))
    RFA_THROW("E_WORKER", "rank " + std::to_string(src) + " could not send to rank " + std::to_string(dst) +
                              " in process " + std::to_string(peer) + ": " + errno_text());
}

void net_begin_call(const std::string& scope, uint64_t call) {
  std::lock_guard<std::mutex> lock(g_mu);
  const auto net = find_locked(scope);
  if (!net) return;
  net->call = call;
  net->aborts.erase(net->aborts.begin(), net->aborts.lower_bound(call));
  if (net->aborted_call && *net->aborted_call < call) {
    // An earlier call failed elsewhere after it had ended here: its abort ends with it.
    mailbox_reset(scope);
    net->aborted_call.reset();
  }
  if (!net->broken.empty()) return abort_here_locked(*net, call, net->broken);
  const auto it = net->aborts.find(call);
  if (it != net->aborts.end()) abort_here_locked(*net, call, it->second);
  std::deque<Parked> later;
  for (Parked& m : net->parked) {
    if (m.call == call)
      deliver_locked(*net, std::move(m));
    else if (m.call > call)
      later.push_back(std::move(m));
  }
  net->parked.swap(later);
}

void net_abort_peers(const std::string& scope, const std::string& reason) {
  std::vector<std::shared_ptr<Conn>> conns;
  uint64_t call = 0;
  std::string text;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    const auto net = find_locked(scope);
    if (!net || net->procs.empty()) return;
    call = net->call;
    net->aborted_call = call;
    text = reason + " (in process " + std::to_string(net->self) + ", " + net->procs[size_t(net->self)].name +
           ")";
    net->aborts.emplace(call, text);
    conns = net->conns;
  }
  const Header h{kAbort, 0, uint32_t(text.size()), 0, 0, 0, call, 0};
  for (auto& c : conns)
    if (c) write_frame(*c, h, "", text, nullptr);  // a peer that is gone needs no telling
}

void net_close(const std::string& scope) {
  std::shared_ptr<Net> net;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    net = find_locked(scope);
    if (!net) return;
    net->closing = true;
    g_nets->erase(scope);
  }
  const Header bye{kBye, 0, 0, 0, 0, 0, 0, 0};
  for (auto& c : net->conns)
    if (c) {
      write_frame(*c, bye, "", "", nullptr);
      std::lock_guard<std::mutex> lock(c->write_mu);
      if (c->fd >= 0) ::shutdown(c->fd, SHUT_RDWR);  // the reader sees the end and closes it
    }
  if (net->accepting)
    ::shutdown(net->listen_fd, SHUT_RDWR);  // wakes the acceptor, which closes the listener
  else
    ::close(net->listen_fd);
  mailbox_reset(scope);
}

}  // namespace rfa::cpu
