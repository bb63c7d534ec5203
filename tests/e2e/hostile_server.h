/// hostile_server.h — a scripted, misbehaving SMTP server inside the test
/// process, for the fault matrix (research note d1: R3–R17).
///
/// HostileServer listens on 127.0.0.1:0 and runs a Script on its own
/// thread for every connection it accepts (one thread per connection).
/// The script talks through a Peer: blocking reads and writes with
/// deadlines, so a script reads like the conversation it stages:
///
///   HostileServer srv([](Peer& p) {
///     p.send("220 mx ESMTP\r\n");
///     p.command();                       // EHLO
///     p.send("250 mx\r\n");
///     p.command();                       // MAIL FROM
///     // ... and never answer: a stall after MAIL.
///   });
///
/// When the script returns, the connection stays open and the server
/// keeps reading (discarding) until the client closes it; the time of that
/// EOF (or reset) is recorded, so a test can check that the client really
/// hung up ("no stuck connection"): wait_done() then info().client_closed.
/// Peer::close() ends it from the server side, Peer::reset() with a RST.
/// Peer::wait_gate() blocks the script until the test calls open_gate():
/// a server that stops reading (TCP zero window) uses it to resume reading
/// once the test has seen the client give up.
///
/// Every wait has a deadline, and every wait of a script also ends when
/// the server is destroyed; nothing sleeps in place of synchronisation
/// (the delays a script stages — a late banner, a trickled reply — are the
/// behaviour under test, not synchronisation). All traffic is on
/// 127.0.0.1.
/// Thread safety: the public methods of HostileServer may be called from
/// the test thread while scripts run; a Peer belongs to its script.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ringmail::testing {

class HostileServer;

/// One accepted connection, as seen by its script.
class Peer {
 public:
  using Clock = std::chrono::steady_clock;
  using milliseconds = std::chrono::milliseconds;

  Peer(int fd, HostileServer* server, size_t index) : fd_(fd), server_(server), index_(index) {}
  Peer(const Peer&) = delete;
  Peer& operator=(const Peer&) = delete;
  ~Peer() { close(); }

  size_t index() const { return index_; }

  /// Sends all of `bytes` (waiting for room up to `timeout`). False when
  /// the client is gone, the deadline passed or the server is stopping.
  bool send(std::string_view bytes, milliseconds timeout = milliseconds(10'000)) {
    auto deadline = Clock::now() + timeout;
    while (!bytes.empty()) {
      if (fd_ < 0) {
        return false;
      }
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
      if (!wait_for(POLLOUT, deadline)) {
        return false;
      }
    }
    return true;
  }

  /// Sends `bytes` one byte per segment (TCP_NODELAY), `gap` apart: the
  /// staged delay is the behaviour under test. False as send().
  bool trickle(std::string_view bytes, milliseconds gap) {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (i > 0 && !pause(gap)) {
        return false;
      }
      if (!send(bytes.substr(i, 1))) {
        return false;
      }
    }
    return true;
  }

  /// Waits `d` (a staged delay); false when the server is stopping.
  bool pause(milliseconds d);

  /// The next line from the client (without its CRLF), or nullopt on EOF,
  /// error or deadline.
  std::optional<std::string> command(milliseconds timeout = milliseconds(5'000)) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      size_t lf = in_.find('\n');
      if (lf != std::string::npos) {
        std::string line = in_.substr(0, lf);
        in_.erase(0, lf + 1);
        if (!line.empty() && line.back() == '\r') {
          line.pop_back();
        }
        commands_.push_back(line);
        return line;
      }
      if (!fill(deadline)) {
        return std::nullopt;
      }
    }
  }

  /// Reads until `marker` has been received (consuming through it); false
  /// on EOF or deadline. The bytes read are added to body().
  bool read_until(std::string_view marker, milliseconds timeout = milliseconds(10'000)) {
    auto deadline = Clock::now() + timeout;
    size_t from = 0;
    for (;;) {
      size_t at = in_.find(marker, from);
      if (at != std::string::npos) {
        body_.append(in_, 0, at + marker.size());
        in_.erase(0, at + marker.size());
        return true;
      }
      // Only the tail can still start the marker: keeps large bodies linear.
      from = in_.size() >= marker.size() ? in_.size() - marker.size() + 1 : 0;
      if (!fill(deadline)) {
        return false;
      }
    }
  }

  /// Reads `n` more bytes; returns how many arrived before EOF or deadline.
  size_t read_bytes(size_t n, milliseconds timeout = milliseconds(10'000)) {
    auto deadline = Clock::now() + timeout;
    while (in_.size() < n && fill(deadline)) {
    }
    size_t got = std::min(n, in_.size());
    body_.append(in_, 0, got);
    in_.erase(0, got);
    return got;
  }

  /// Closes the connection now (the server hangs up with a FIN).
  void close() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  /// Closes the connection with a RST (SO_LINGER of zero).
  void reset() {
    if (fd_ >= 0) {
      linger l{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      close();
    }
  }

  /// Blocks until the test calls HostileServer::open_gate() (or `timeout`).
  bool wait_gate(milliseconds timeout = milliseconds(30'000));

  bool eof() const { return eof_; }
  std::optional<Clock::time_point> eof_at() const { return eof_at_; }
  const std::vector<std::string>& commands() const { return commands_; }
  const std::string& body() const { return body_; }
  /// Bytes received but not consumed by command()/read_until()/read_bytes().
  size_t unread() const { return in_.size(); }
  int fd() const { return fd_; }

 private:
  friend class HostileServer;

  /// Waits for `events` on the socket until the deadline; false on the
  /// deadline or when the server is stopping.
  bool wait_for(short events, Clock::time_point deadline);

  /// Reads what is there (waiting up to the deadline). False on EOF, error
  /// or deadline.
  bool fill(Clock::time_point deadline) {
    if (fd_ < 0 || eof_) {
      return false;
    }
    if (!wait_for(POLLIN, deadline)) {
      return false;
    }
    char buf[16384];
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return true;
    }
    eof_ = true;  // EOF, or an error such as a reset: the client is gone
    eof_at_ = Clock::now();
    return false;
  }

  int fd_;
  HostileServer* server_;
  size_t index_;
  bool eof_ = false;
  std::optional<Clock::time_point> eof_at_;
  std::string in_;
  std::string body_;
  std::vector<std::string> commands_;
};

class HostileServer {
 public:
  using Script = std::function<void(Peer&)>;
  using Clock = std::chrono::steady_clock;
  using milliseconds = std::chrono::milliseconds;

  /// What happened on one connection.
  struct ConnInfo {
    Clock::time_point accepted;
    std::optional<Clock::time_point> client_closed;  // EOF (or reset) seen from the client
    bool server_closed = false;                      // the script hung up first
    bool done = false;                               // script and after-script reading over
    std::vector<std::string> commands;               // lines the script read
    std::string body;                                // bytes read_until/read_bytes consumed
    size_t bytes_after_script = 0;                   // unread by the script, or read after it
  };

  /// `rcvbuf`: SO_RCVBUF for accepted sockets (set on the listener so the
  /// window is small from the handshake on); 0 keeps the default.
  explicit HostileServer(Script script, int rcvbuf = 0) : script_(std::move(script)) {
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd_ < 0 || stop_fd_ < 0) {
      return;
    }
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0) {
      ::setsockopt(listen_fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 64) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ::close(listen_fd_);
      listen_fd_ = -1;
      return;
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~HostileServer() {
    // Stop first: every script wait and the after-script reading end on it.
    if (stop_fd_ >= 0) {
      uint64_t one = 1;
      ssize_t n = ::write(stop_fd_, &one, sizeof one);
      (void)n;
    }
    open_gate();
    if (acceptor_.joinable()) {
      acceptor_.join();
    }
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) {
      t.join();
    }
    if (listen_fd_ >= 0) {
      ::close(listen_fd_);
    }
    if (stop_fd_ >= 0) {
      ::close(stop_fd_);
    }
  }

  HostileServer(const HostileServer&) = delete;
  HostileServer& operator=(const HostileServer&) = delete;

  bool ok() const { return listen_fd_ >= 0; }
  uint16_t port() const { return port_; }

  size_t connections() {
    std::lock_guard lock(mu_);
    return conns_.size();
  }
  /// A copy of connection `i`'s record (complete once done).
  ConnInfo info(size_t i) {
    std::lock_guard lock(mu_);
    return i < conns_.size() ? conns_[i] : ConnInfo{};
  }

  /// Waits until connection `i` exists and is over: its script returned
  /// and the client closed it, the script hung up, or 30 s passed after the
  /// script. info(i).client_closed then says whether the client hung up.
  bool wait_done(size_t i, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return i < conns_.size() && conns_[i].done; });
  }
  /// Waits until connection `i` is over and the client was the one that
  /// closed it.
  bool wait_client_closed(size_t i, milliseconds timeout) {
    return wait_done(i, timeout) && info(i).client_closed.has_value();
  }
  bool wait_connections(size_t n, milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return conns_.size() >= n; });
  }

  void open_gate() {
    std::lock_guard lock(mu_);
    gate_open_ = true;
    cv_.notify_all();
  }

 private:
  friend class Peer;

  bool wait_gate(milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return gate_open_; });
  }

  void accept_loop() {
    for (;;) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) {
        continue;
      }
      if ((p[1].revents & POLLIN) != 0) {
        return;
      }
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        continue;
      }
      std::lock_guard lock(mu_);
      size_t index = conns_.size();
      ConnInfo c;
      c.accepted = Clock::now();
      conns_.push_back(std::move(c));
      cv_.notify_all();
      threads_.emplace_back([this, fd, index] { serve(fd, index); });
    }
  }

  void serve(int fd, size_t index) {
    Peer peer(fd, this, index);
    script_(peer);
    // The script is over: read (and discard) until the client hangs up, so
    // the test learns whether it does.
    size_t extra = peer.unread();
    auto deadline = Clock::now() + milliseconds(30'000);
    while (peer.fd() >= 0 && !peer.eof() && Clock::now() < deadline &&
           peer.wait_for(POLLIN, deadline)) {
      char buf[16384];
      ssize_t n = ::recv(peer.fd(), buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        extra += static_cast<size_t>(n);
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        peer.eof_ = true;
        peer.eof_at_ = Clock::now();
      }
    }
    std::lock_guard lock(mu_);
    ConnInfo& c = conns_[index];
    c.server_closed = peer.fd() < 0 && !peer.eof();
    c.client_closed = peer.eof_at();
    c.commands = peer.commands();
    c.body = peer.body();
    c.bytes_after_script = extra;
    c.done = true;
    cv_.notify_all();
    peer.close();
  }

  Script script_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ConnInfo> conns_;
  std::vector<std::thread> threads_;
  bool gate_open_ = false;
};

inline bool Peer::wait_for(short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || fd_ < 0) {
      return false;
    }
    pollfd p[2] = {{fd_, events, 0}, {server_->stop_fd_, POLLIN, 0}};
    int r = ::poll(p, 2, static_cast<int>(std::min<long long>(left, 1'000)));
    if (r < 0 && errno != EINTR) {
      return false;
    }
    if (r > 0 && (p[1].revents & POLLIN) != 0) {
      return false;  // the server is being destroyed
    }
    if (r > 0 && p[0].revents != 0) {
      return true;  // ready, or an error/hang-up the next call reports
    }
  }
}

inline bool Peer::pause(milliseconds d) {
  auto deadline = Clock::now() + d;
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return true;
    }
    pollfd p{server_->stop_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) > 0) {
      return false;
    }
  }
}

inline bool Peer::wait_gate(milliseconds timeout) {
  return server_->wait_gate(timeout);
}

}  // namespace ringmail::testing
