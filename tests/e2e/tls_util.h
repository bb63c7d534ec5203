/// tls_util.h — helpers for TLS tests:
///   - TestPki: a throwaway PKI made per test run with the openssl CLI (a
///     CA, server certificates for "mx.test"/"localhost"/127.0.0.1, one for
///     another name, an expired one and a self-signed one). Nothing is
///     committed; the keys die with the temporary directory.
///   - TlsPeer: tests/e2e/tls_peer.py (python3-aiosmtpd, OpenSSL) as a
///     receiving server with STARTTLS, implicit TLS or none, and its JSON
///     log of what it saw.
///   - SServerPeer: `openssl s_server` scripted as an implicit-TLS SMTP
///     server (the test thread answers each line the client sends).
///   - SmtpTestClient: a blocking SMTP client that can switch to TLS
///     (ringmail's own TlsChannel over the socket), for raw protocol tests.
///
/// Every wait polls a condition against a deadline; nothing sleeps in place
/// of synchronisation.
#pragma once

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/tls.h"
#include "tests/e2e/harness.h"

namespace ringmail::testing {

inline std::string openssl_path() {
  return env_or("OPENSSL", "/usr/bin/openssl");
}
inline std::string python_path() {
  return env_or("PYTHON3", "/usr/bin/python3");
}
inline std::string tls_peer_script() {
  return env_or("RINGMAIL_TLS_PEER", "tests/e2e/tls_peer.py");
}

/// Runs `script` with /bin/sh in `dir`; output goes to dir/sh.log.
inline bool run_shell(const std::string& dir, const std::string& script, std::string* log) {
  std::string path = dir + "/script.sh";
  {
    std::ofstream f(path);
    f << "set -e\ncd '" << dir << "'\n" << script;
  }
  std::string cmd = "/bin/sh '" + path + "' > '" + dir + "/sh.log' 2>&1";
  int rc = std::system(cmd.c_str());
  if (log != nullptr) {
    *log = read_file(dir + "/sh.log").value_or("");
  }
  return rc == 0;
}

class TestPki {
 public:
  struct Pair {
    std::string cert;
    std::string key;
  };

  TestPki() {
    const std::string o = openssl_path();
    // EC P-256 keys: fast to make and to use. The expired certificate
    // comes from `openssl ca` with explicit dates (x509 -days cannot go
    // backwards cleanly).
    std::string script =
        "O='" + o + "'\n" +
        "$O req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key "
        "-out ca.crt -days 30 -subj '/CN=ringmail test CA' "
        "-addext 'basicConstraints=critical,CA:TRUE' "
        "-addext 'keyUsage=critical,keyCertSign,cRLSign'\n"
        "make_csr() { $O req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $1.key "
        "-out $1.csr -subj \"/CN=$2\"; }\n"
        "ext() { printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\n"
        "extendedKeyUsage=serverAuth\\n' \"$1\" > $2.ext; }\n"
        "make_csr good mx.test\n"
        "ext 'DNS:mx.test,DNS:localhost,IP:127.0.0.1' good\n"
        "$O x509 -req -in good.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out good.crt "
        "-days 30 -extfile good.ext\n"
        "make_csr other other.test\n"
        "ext 'DNS:other.test' other\n"
        "$O x509 -req -in other.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out other.crt "
        "-days 30 -extfile other.ext\n"
        "make_csr expired mx.test\n"
        "ext 'DNS:mx.test,DNS:localhost,IP:127.0.0.1' expired\n"
        "printf '[ca]\\ndefault_ca=t\\n[t]\\ndatabase=./index.txt\\nnew_certs_dir=.\\n"
        "serial=./serial\\ndefault_md=sha256\\npolicy=p\\nunique_subject=no\\n"
        "[p]\\ncommonName=supplied\\n' > ca.cnf\n"
        ": > index.txt; echo 1000 > serial\n"
        "$O ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr "
        "-out expired.crt -startdate 20200101000000Z -enddate 20200201000000Z "
        "-extfile expired.ext -notext\n"
        "$O req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout self.key "
        "-out self.crt -days 30 -subj '/CN=mx.test' "
        "-addext 'subjectAltName=DNS:mx.test,DNS:localhost,IP:127.0.0.1'\n";
    ok_ = run_shell(dir_.path(), script, &log_);
  }

  bool ok() const { return ok_; }
  const std::string& log() const { return log_; }
  std::string ca() const { return dir_.file("ca.crt"); }
  Pair good() const { return pair("good"); }
  Pair other_name() const { return pair("other"); }
  Pair expired() const { return pair("expired"); }
  Pair self_signed() const { return pair("self"); }
  const TempDir& dir() const { return dir_; }

 private:
  Pair pair(const std::string& n) const { return {dir_.file(n + ".crt"), dir_.file(n + ".key")}; }
  TempDir dir_;
  bool ok_ = false;
  std::string log_;
};

/// tls_peer.py as a child process.
class TlsPeer {
 public:
  /// `args`: tls_peer.py options besides --log and --port.
  bool start(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {python_path(), tls_peer_script(), "--port",
                                     "0",           "--log",           log_file()};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!child_.start(argv, dir_.path(), "peer")) {
      return false;
    }
    return eventually(
               [&] {
                 std::string out = child_.out();
                 size_t at = out.find("READY ");
                 if (at != std::string::npos && out.find('\n', at) != std::string::npos) {
                   port_ = static_cast<uint16_t>(std::atoi(out.c_str() + at + 6));
                   return true;
                 }
                 return !child_.running();
               },
               milliseconds(20'000)) &&
           port_ != 0;
  }
  uint16_t port() const { return port_; }
  std::string err() const { return child_.err(); }
  std::string log() const { return read_file(log_file()).value_or(""); }
  /// Lines of the log containing every one of `needles`.
  size_t count(std::initializer_list<std::string_view> needles) const {
    size_t n = 0;
    std::string text = log();
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      std::string_view line(text.data() + pos, (nl == std::string::npos ? text.size() : nl) - pos);
      bool all = true;
      for (auto needle : needles) {
        all = all && line.find(needle) != std::string_view::npos;
      }
      n += all && !line.empty() ? 1 : 0;
      pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    return n;
  }
  size_t messages() const { return count({"\"event\": \"message\""}); }

 private:
  std::string log_file() const { return dir_.file("peer.jsonl"); }
  TempDir dir_;
  Child child_;
  uint16_t port_ = 0;
};

/// `openssl s_server -quiet` answering as an implicit-TLS SMTP server. The
/// script: 220 greeting; EHLO -> AUTH PLAIN LOGIN and SIZE; AUTH PLAIN with
/// the expected credentials -> 235 (else 535); MAIL/RCPT/RSET/NOOP -> 250;
/// DATA -> 354 ... "." -> 250; QUIT -> 221 and end.
class SServerPeer {
 public:
  ~SServerPeer() {
    stop_ = true;
    if (in_fd_ >= 0) {
      ::close(in_fd_);
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    if (reader_.joinable()) {
      reader_.join();
    }
    if (out_fd_ >= 0) {
      ::close(out_fd_);
    }
  }

  /// `auth_b64`: the expected AUTH PLAIN initial response (empty: any).
  bool start(const TestPki::Pair& cert, std::string auth_b64 = "") {
    auth_b64_ = std::move(auth_b64);
    port_ = free_port();
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
      return false;
    }
    std::vector<std::string> args = {
        openssl_path(), "s_server", "-accept", "127.0.0.1:" + std::to_string(port_),
        "-cert",        cert.cert,  "-key",    cert.key,
        "-quiet",       "-naccept", "1"};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, dir_.file("s_server.err").c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> cargv;
    for (auto& a : args) {
      cargv.push_back(a.data());
    }
    cargv.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0].c_str(), &fa, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(in[0]);
    ::close(out[1]);
    in_fd_ = in[1];
    out_fd_ = out[0];
    if (rc != 0) {
      pid_ = -1;
      return false;
    }
    // s_server sends this once a client is connected (it reads stdin only then).
    write_line("220 sserver.test ESMTP scripted");
    reader_ = std::thread([this] { serve(); });
    // Listening: a plain TCP connect succeeds (s_server then sees a client
    // that leaves; -naccept counts only completed handshakes? it does not,
    // so probe with the port number only through /proc is overkill). Wait
    // for the socket to exist instead.
    return eventually([&] { return listening(); }, milliseconds(10'000));
  }

  uint16_t port() const { return port_; }
  std::string transcript() {
    std::lock_guard lock(mu_);
    return transcript_;
  }
  size_t messages() const { return messages_.load(); }
  std::string err() const { return read_file(dir_.file("s_server.err")).value_or(""); }

 private:
  bool listening() const {
    std::string tcp = read_file("/proc/net/tcp").value_or("");
    char needle[32];
    std::snprintf(needle, sizeof needle, "0100007F:%04X 00000000:0000 0A", port_);
    return tcp.find(needle) != std::string::npos;
  }

  void write_line(const std::string& line) {
    std::string l = line + "\r\n";
    ssize_t n = ::write(in_fd_, l.data(), l.size());
    (void)n;
  }

  void serve() {
    std::string buf;
    bool in_data = false;
    while (!stop_) {
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) {
        continue;
      }
      char tmp[4096];
      ssize_t n = ::read(out_fd_, tmp, sizeof tmp);
      if (n <= 0) {
        return;
      }
      buf.append(tmp, static_cast<size_t>(n));
      size_t nl;
      while ((nl = buf.find('\n')) != std::string::npos) {
        std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') {
          line.pop_back();
        }
        {
          std::lock_guard lock(mu_);
          transcript_ += line + "\n";
        }
        if (in_data) {
          if (line == ".") {
            in_data = false;
            ++messages_;
            write_line("250 2.0.0 queued by s_server");
          }
          continue;
        }
        std::string verb = line.substr(0, 4);
        for (char& c : verb) {
          c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        if (verb == "EHLO") {
          write_line("250-sserver.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10000000");
        } else if (verb == "AUTH") {
          bool ok = auth_b64_.empty() || line == "AUTH PLAIN " + auth_b64_;
          write_line(ok ? "235 2.7.0 ok" : "535 5.7.8 bad credentials");
        } else if (verb == "DATA") {
          in_data = true;
          write_line("354 go ahead");
        } else if (verb == "QUIT") {
          write_line("221 bye");
          ::close(in_fd_);
          in_fd_ = -1;
        } else {
          write_line("250 ok");
        }
      }
    }
  }

  TempDir dir_;
  pid_t pid_ = -1;
  int in_fd_ = -1;
  int out_fd_ = -1;
  uint16_t port_ = 0;
  std::string auth_b64_;
  std::thread reader_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> messages_{0};
  std::mutex mu_;
  std::string transcript_;
};

/// A blocking SMTP client over plaintext or TLS (TlsChannel), 5 s timeouts.
class SmtpTestClient {
 public:
  /// Connects to 127.0.0.1:`port`; from `source` (another loopback
  /// address such as "127.0.0.7") when given, so tests can play many clients.
  explicit SmtpTestClient(uint16_t port, const std::string& source = "") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!source.empty()) {
      sockaddr_in from{};
      from.sin_family = AF_INET;
      if (::inet_pton(AF_INET, source.c_str(), &from.sin_addr) != 1 ||
          ::bind(fd_, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
        error_ = "cannot bind to " + source;
        return;
      }
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~SmtpTestClient() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  SmtpTestClient(const SmtpTestClient&) = delete;
  SmtpTestClient& operator=(const SmtpTestClient&) = delete;

  bool connected() const { return connected_; }

  /// TLS handshake as a client (no verification: the tests check the
  /// server side here). Returns false with error() on failure.
  bool start_tls() {
    // One context for every test client (no CA: nothing is verified here).
    static std::unique_ptr<engine::TlsContext> ctx = [] {
      engine::TlsConfig cfg;
      cfg.ca_file = "/nonexistent";
      auto c = engine::TlsContext::client(cfg);
      return c.ok() ? std::move(*c) : nullptr;
    }();
    if (ctx == nullptr) {
      error_ = "no TLS client context";
      return false;
    }
    engine::TlsChannel::ClientParams p;
    p.server_name = "localhost";
    auto ch = engine::TlsChannel::client(*ctx, p);
    if (!ch.ok()) {
      error_ = ch.error().message;
      return false;
    }
    tls_ = std::move(*ch);
    // Bytes already read past the 220 are part of the handshake.
    if (!buf_.empty()) {
      error_ = "plaintext bytes after the 220 to STARTTLS: " + buf_;
      return false;
    }
    for (;;) {
      auto st = tls_->handshake();
      if (!send_tls_output()) {
        return false;
      }
      if (st == engine::TlsChannel::Status::kDone) {
        return true;
      }
      if (st != engine::TlsChannel::Status::kWant) {
        error_ = tls_->error();
        return false;
      }
      if (!recv_cipher()) {
        error_ = "connection closed during the handshake";
        return false;
      }
    }
  }
  std::string tls_summary() const { return tls_ ? tls_->summary() : ""; }
  const std::string& error() const { return error_; }

  bool send(std::string_view data) {
    if (tls_ != nullptr) {
      if (tls_->write(std::span<const char>(data.data(), data.size())) !=
          engine::TlsChannel::Status::kDone) {
        return false;
      }
      return send_tls_output();
    }
    return send_raw(data);
  }

  Reply read_reply() {
    return read_smtp_reply([this] { return read_line(); });
  }
  Reply command(std::string_view line) {
    send(std::string(line) + "\r\n");
    return read_reply();
  }
  /// True when nothing more arrives within `wait` (the server said nothing).
  bool silent_for(milliseconds wait) {
    if (!buf_.empty()) {
      return false;
    }
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(wait.count()));
    if (rc <= 0) {
      return true;
    }
    if (tls_ == nullptr) {
      return false;
    }
    // TLS records (a session ticket) are not replies: decrypt and look.
    if (!recv_cipher()) {
      return true;
    }
    char tmp[4096];
    size_t n = 0;
    if (tls_->read(std::span<char>(tmp, sizeof tmp), &n) != engine::TlsChannel::Status::kDone) {
      return true;
    }
    buf_.append(tmp, n);  // a reply: kept for read_reply()
    return false;
  }
  /// True when the server closes the connection (EOF or reset) within
  /// `wait`; anything it sends before is discarded. False on timeout.
  bool closed_within(milliseconds wait) {
    buf_.clear();
    auto deadline = Clock::now() + wait;
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return false;
      }
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        return true;
      }
    }
  }
  /// True when the server closed the connection (EOF or reset).
  bool closed_by_peer() {
    for (int i = 0; i < 100; ++i) {
      if (!fill()) {
        return true;
      }
      buf_.clear();
    }
    return false;
  }

  /// Bytes straight to the socket, past TLS (a client that sends records
  /// of its own making, or pieces of one).
  bool send_raw(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 private:
  bool send_tls_output() {
    std::string out;
    tls_->take_output(&out);
    return send_raw(out);
  }
  bool recv_cipher() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) {
      return false;
    }
    char tmp[16384];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      return false;
    }
    tls_->feed(std::span<const char>(tmp, static_cast<size_t>(n)));
    return true;
  }
  // Reads more plaintext into buf_; false at EOF, error or timeout.
  bool fill() {
    if (tls_ == nullptr) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) {
        return false;
      }
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        return false;
      }
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    for (;;) {
      char tmp[16384];
      size_t n = 0;
      auto st = tls_->read(std::span<char>(tmp, sizeof tmp), &n);
      if (st == engine::TlsChannel::Status::kDone) {
        buf_.append(tmp, n);
        return true;
      }
      if (st != engine::TlsChannel::Status::kWant || !recv_cipher()) {
        return false;
      }
    }
  }
  std::optional<std::string> read_line() {
    for (;;) {
      size_t nl = buf_.find("\r\n");
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 2);
        return line;
      }
      if (!fill()) {
        return std::nullopt;
      }
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
  std::string error_;
  std::unique_ptr<engine::TlsChannel> tls_;
};

}  // namespace ringmail::testing
