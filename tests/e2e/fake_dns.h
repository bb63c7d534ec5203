/// fake_dns.h — a scripted DNS server for hostile-answer tests, in the test
/// process.
///
/// FakeDns binds UDP and TCP on the same ephemeral port of 127.0.0.1 and
/// answers each query from a table of canned responses keyed by (qname,
/// qtype). A canned response is raw bytes after the echoed question, with
/// header counts written as given, so it can lie: say one answer and end
/// early, loop compression pointers, chain CNAMEs in a circle. It can also
/// never answer (a silent server), answer with TC over UDP and in full over
/// TCP (large answers), or hold its answer until release() (to prove that
/// concurrent lookups share one query).
///
/// Names without an entry: NODATA when the name has an entry of another
/// type, NXDOMAIN otherwise. Every query is logged (name, type, transport)
/// for assertions.
///
/// Threading: one server thread (poll over the sockets and an eventfd);
/// every public method may be called from any thread. The destructor stops
/// the thread and closes every socket. TCP answers are cut at
/// kMaxTcpMessage (the 16-bit length prefix); held queries are UDP only.
///
/// The wire helpers (name(), rr(), mx(), ...) build RFC 1035 pieces; kQname
/// is a compression pointer to the question name at offset 12.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ringmail::testing::dns {

inline constexpr uint16_t kA = 1;
inline constexpr uint16_t kCname = 5;
inline constexpr uint16_t kMx = 15;
inline constexpr uint16_t kAaaa = 28;

/// Compression pointer to the question name (always at offset 12).
inline const std::string kQname("\xC0\x0C", 2);

inline std::string u16(uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}
inline std::string u32(uint32_t v) {
  return u16(static_cast<uint16_t>(v >> 16)) + u16(v & 0xffff);
}

/// Uncompressed wire name; "" or "." is the root.
inline std::string name(std::string_view dotted) {
  std::string out;
  while (!dotted.empty() && dotted != ".") {
    size_t dot = dotted.find('.');
    std::string_view label = dotted.substr(0, dot);
    out.push_back(static_cast<char>(label.size()));
    out.append(label);
    dotted = dot == std::string_view::npos ? std::string_view() : dotted.substr(dot + 1);
  }
  out.push_back('\0');
  return out;
}

/// A resource record of class IN; rdlen is the size of `rdata` unless given.
inline std::string rr(const std::string& owner, uint16_t type, uint32_t ttl,
                      const std::string& rdata, std::optional<uint16_t> rdlen = std::nullopt) {
  return owner + u16(type) + u16(1) + u32(ttl) +
         u16(rdlen.value_or(static_cast<uint16_t>(rdata.size()))) + rdata;
}

inline std::string mx(uint16_t preference, const std::string& exchange_wire) {
  return u16(preference) + exchange_wire;
}

inline std::string ipv4(const char* text) {
  in_addr a{};
  ::inet_pton(AF_INET, text, &a);
  return std::string(reinterpret_cast<const char*>(&a), 4);
}

inline std::string ipv6(const char* text) {
  in6_addr a{};
  ::inet_pton(AF_INET6, text, &a);
  return std::string(reinterpret_cast<const char*>(&a), 16);
}

/// One scripted response.
struct Canned {
  uint8_t rcode = 0;
  uint16_t an = 0, ns = 0, ar = 0;  // header counts, as sent (they may lie)
  std::string records;              // everything after the echoed question
  bool qr = true;                   // false: a "response" that says it is a query
  bool silent = false;              // never answered
  bool tc_over_udp = false;         // UDP: TC set, no records; TCP: the full answer
  bool hold = false;                // UDP: answered only after release()

  /// A well-formed answer: `records` holds `count` answer records.
  static Canned answer(uint16_t count, std::string records, uint8_t rcode = 0) {
    Canned c;
    c.an = count;
    c.records = std::move(records);
    c.rcode = rcode;
    return c;
  }
  static Canned error(uint8_t rcode) {
    Canned c;
    c.rcode = rcode;
    return c;
  }
};

struct Seen {
  std::string qname;
  uint16_t qtype = 0;
  bool tcp = false;
};

class FakeDns {
 public:
  static constexpr size_t kMaxTcpMessage = 65535;

  FakeDns() {
    wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    // UDP and TCP on one port: retry when the TCP side is taken.
    for (int attempt = 0; attempt < 50 && port_ == 0; ++attempt) {
      int u = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      sockaddr_in a = loopback(0);
      socklen_t len = sizeof a;
      if (::bind(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::getsockname(u, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ::close(u);
        continue;
      }
      int t = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(t, 16) != 0) {
        ::close(u);
        ::close(t);
        continue;
      }
      udp_ = u;
      tcp_ = t;
      port_ = ntohs(a.sin_port);
    }
    if (port_ != 0 && wake_ >= 0) {
      thread_ = std::thread([this] { run(); });
    }
  }

  ~FakeDns() {
    if (thread_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      poke();
      thread_.join();
    }
    for (auto& c : conns_) {
      ::close(c.fd);
    }
    for (int fd : {udp_, tcp_, wake_}) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
  }
  FakeDns(const FakeDns&) = delete;
  FakeDns& operator=(const FakeDns&) = delete;

  bool ok() const { return thread_.joinable(); }
  uint16_t port() const { return port_; }
  /// For dns.servers.
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }

  /// Sets (or replaces) the response for (qname, qtype); qname lower-case.
  void set(const std::string& qname, uint16_t qtype, Canned c) {
    std::lock_guard lock(mu_);
    table_[{qname, qtype}] = std::move(c);
  }

  /// Answers every held query, and stops holding.
  void release() {
    {
      std::lock_guard lock(mu_);
      for (auto& [key, c] : table_) {
        c.hold = false;
      }
      release_ = true;
    }
    poke();
  }

  /// Queries seen for (qname, qtype); qtype 0 counts every type.
  size_t count(const std::string& qname, uint16_t qtype = 0, bool tcp_only = false) const {
    std::lock_guard lock(mu_);
    return static_cast<size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const Seen& s) {
      return s.qname == qname && (qtype == 0 || s.qtype == qtype) && (!tcp_only || s.tcp);
    }));
  }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  struct Conn {
    int fd;
    std::string buf;
  };
  struct Held {
    sockaddr_in from;
    std::string query;
  };

  static sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }

  void poke() {
    uint64_t one = 1;
    ssize_t n = ::write(wake_, &one, sizeof one);
    (void)n;
  }

  /// Parses the question; returns false for anything that is not a
  /// one-question query with an uncompressed name.
  static bool parse_question(const std::string& q, std::string* qname, uint16_t* qtype,
                             size_t* qend) {
    if (q.size() < 12 || ((static_cast<uint8_t>(q[4]) << 8) | static_cast<uint8_t>(q[5])) < 1) {
      return false;
    }
    size_t p = 12;
    std::string n;
    for (;;) {
      if (p >= q.size()) {
        return false;
      }
      auto len = static_cast<uint8_t>(q[p]);
      if (len == 0) {
        ++p;
        break;
      }
      if (len > 63 || p + 1 + len > q.size()) {
        return false;
      }
      if (!n.empty()) {
        n.push_back('.');
      }
      for (size_t i = 0; i < len; ++i) {
        char c = q[p + 1 + i];
        n.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
      }
      p += 1 + len;
    }
    if (p + 4 > q.size()) {
      return false;
    }
    *qname = n;
    *qtype =
        static_cast<uint16_t>((static_cast<uint8_t>(q[p]) << 8) | static_cast<uint8_t>(q[p + 1]));
    *qend = p + 4;
    return true;
  }

  /// Builds the response to `q`; nullopt = do not answer (silent, held, or
  /// not a query). *held is set when the answer waits for release().
  /// `released`: a held query answered now (already logged).
  std::optional<std::string> respond(const std::string& q, bool tcp, bool* held,
                                     bool released = false) {
    std::string qname;
    uint16_t qtype = 0;
    size_t qend = 0;
    *held = false;
    if (!parse_question(q, &qname, &qtype, &qend)) {
      return std::nullopt;
    }
    Canned c;
    {
      std::lock_guard lock(mu_);
      if (!released) {
        seen_.push_back(Seen{qname, qtype, tcp});
      }
      auto it = table_.find({qname, qtype});
      if (it != table_.end()) {
        c = it->second;
      } else {
        bool exists = std::any_of(table_.begin(), table_.end(),
                                  [&](const auto& kv) { return kv.first.first == qname; });
        c = Canned::error(exists ? 0 : 3);
      }
    }
    if (c.silent) {
      return std::nullopt;
    }
    if (c.hold && !tcp) {
      *held = true;
      return std::nullopt;
    }
    const bool truncate = c.tc_over_udp && !tcp;
    uint16_t flags = static_cast<uint16_t>((c.qr ? 0x8000 : 0) | 0x0400 |
                                           (static_cast<uint8_t>(q[2]) & 0x01) << 8 | 0x0080 |
                                           (truncate ? 0x0200 : 0) | (c.rcode & 0x0F));
    std::string out = q.substr(0, 2) + u16(flags) + u16(1);
    if (truncate) {
      out += u16(0) + u16(0) + u16(0);
      out += q.substr(12, qend - 12);
      return out;
    }
    out += u16(c.an) + u16(c.ns) + u16(c.ar);
    out += q.substr(12, qend - 12);
    out += c.records;
    return out;
  }

  void answer_udp(const sockaddr_in& from, const std::string& q, bool released = false) {
    bool held = false;
    auto r = respond(q, false, &held, released);
    if (held) {
      held_.push_back(Held{from, q});
      return;
    }
    if (r) {
      ::sendto(udp_, r->data(), r->size(), 0, reinterpret_cast<const sockaddr*>(&from),
               sizeof from);
    }
  }

  /// Reads what is there; answers each complete message. False: close it.
  bool serve_tcp(Conn& c) {
    char buf[4096];
    ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) {
      return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
    c.buf.append(buf, static_cast<size_t>(n));
    while (c.buf.size() >= 2) {
      size_t len = (static_cast<uint8_t>(c.buf[0]) << 8) | static_cast<uint8_t>(c.buf[1]);
      if (c.buf.size() < 2 + len) {
        break;
      }
      std::string q = c.buf.substr(2, len);
      c.buf.erase(0, 2 + len);
      bool held = false;
      auto r = respond(q, true, &held);
      if (!r) {
        continue;
      }
      if (r->size() > kMaxTcpMessage) {
        r->resize(kMaxTcpMessage);
      }
      std::string framed = u16(static_cast<uint16_t>(r->size())) + *r;
      size_t off = 0;
      while (off < framed.size()) {
        ssize_t w = ::send(c.fd, framed.data() + off, framed.size() - off, MSG_NOSIGNAL);
        if (w <= 0) {
          return false;
        }
        off += static_cast<size_t>(w);
      }
    }
    return true;
  }

  void run() {
    for (;;) {
      std::vector<pollfd> fds = {{wake_, POLLIN, 0}, {udp_, POLLIN, 0}, {tcp_, POLLIN, 0}};
      for (const auto& c : conns_) {
        fds.push_back({c.fd, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) {
          continue;
        }
        return;
      }
      if ((fds[0].revents & POLLIN) != 0) {
        uint64_t v;
        ssize_t n = ::read(wake_, &v, sizeof v);
        (void)n;
        bool release = false;
        {
          std::lock_guard lock(mu_);
          if (stop_) {
            return;
          }
          release = release_;
          release_ = false;
        }
        if (release) {
          std::vector<Held> held;
          held.swap(held_);
          for (const Held& h : held) {
            answer_udp(h.from, h.query, /*released=*/true);
          }
        }
      }
      if ((fds[1].revents & POLLIN) != 0) {
        char buf[4096];
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        ssize_t n = ::recvfrom(udp_, buf, sizeof buf, MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &flen);
        if (n > 0) {
          answer_udp(from, std::string(buf, static_cast<size_t>(n)));
        }
      }
      if ((fds[2].revents & POLLIN) != 0) {
        int fd = ::accept4(tcp_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          conns_.push_back(Conn{fd, {}});
        }
      }
      // fds[3 + i] matches conns_[i] as they were before any accept above.
      std::vector<Conn> keep;
      for (size_t i = 0; i < conns_.size(); ++i) {
        bool polled = 3 + i < fds.size();
        if (polled && fds[3 + i].revents != 0 && !serve_tcp(conns_[i])) {
          ::close(conns_[i].fd);
          continue;
        }
        keep.push_back(std::move(conns_[i]));
      }
      conns_.swap(keep);
    }
  }

  int udp_ = -1, tcp_ = -1, wake_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, uint16_t>, Canned> table_;
  std::vector<Seen> seen_;
  bool stop_ = false;
  bool release_ = false;
  // Server thread only.
  std::vector<Conn> conns_;
  std::vector<Held> held_;
};

}  // namespace ringmail::testing::dns
