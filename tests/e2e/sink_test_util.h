/// sink_test_util.h — helpers for tests that run ringmail-sink as a
/// subprocess: start it on 127.0.0.1:0 and read its "listening" line, talk
/// SMTP over a tiny blocking client, poll its stats file with a deadline,
/// and stop it with SIGTERM to read its exit line.
///
/// No sleeps stand in for synchronisation: every wait polls a condition
/// against a deadline. Single-threaded test use only.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace ringmail::testing {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

inline std::string sink_path() {
  const char* p = std::getenv("RINGMAIL_SINK");
  return p != nullptr ? p : "";
}

/// A temporary directory, removed (with its files) at destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/ringmail-sink-test-XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    if (p != nullptr) {
      path_ = p;
    }
  }
  ~TempDir() {
    if (!path_.empty()) {
      std::string cmd = "rm -rf '" + path_ + "'";
      int rc = std::system(cmd.c_str());
      (void)rc;
    }
  }
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

inline std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The value of "key":<number> in a flat JSON object; -1 when absent.
inline double json_number(std::string_view json, std::string_view key) {
  std::string needle = "\"" + std::string(key) + "\":";
  size_t at = json.find(needle);
  if (at == std::string_view::npos) {
    return -1;
  }
  return std::strtod(std::string(json.substr(at + needle.size(), 32)).c_str(), nullptr);
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
template <class F>
bool eventually(F cond, milliseconds timeout = milliseconds(10'000)) {
  auto deadline = Clock::now() + timeout;
  while (!cond()) {
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(milliseconds(5));  // polling interval, not synchronisation
  }
  return true;
}

/// ringmail-sink running as a child process.
class SinkProcess {
 public:
  SinkProcess() = default;
  /// Stops the sink with SIGTERM and fails the test unless it exits 0 (so
  /// sanitizer reports, leaks included, fail the test that caused them).
  ~SinkProcess() {
    if (pid_ > 0) {
      int rc = terminate();
      if (rc != 0) {
        ADD_FAILURE() << "ringmail-sink exited with status " << rc;
      }
    }
    if (out_fd_ >= 0) {
      ::close(out_fd_);
    }
  }
  SinkProcess(const SinkProcess&) = delete;
  SinkProcess& operator=(const SinkProcess&) = delete;

  /// Starts the sink with `args` (plus --listen 127.0.0.1:0 unless a
  /// --listen is given, and --stats-file in the temp dir) and waits for
  /// `listeners` "listening" lines. `env` entries are added to the
  /// environment. Returns false (with error()) on failure.
  bool start(std::vector<std::string> args, size_t listeners = 1,
             std::vector<std::string> env = {}) {
    stats_file_ = dir_.file("stats.json");
    // A short stats interval keeps the polling tests fast.
    std::vector<std::string> argv = {sink_path(), "--stats-file", stats_file_,
                                     "--stats-interval-ms", "20"};
    bool has_listen = false;
    for (const auto& a : args) {
      has_listen = has_listen || a.rfind("--listen", 0) == 0;
    }
    if (!has_listen) {
      argv.push_back("--listen");
      argv.push_back("127.0.0.1:0");
    }
    argv.insert(argv.end(), args.begin(), args.end());
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
      error_ = "pipe";
      return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    std::vector<char*> cargv;
    for (auto& a : argv) {
      cargv.push_back(a.data());
    }
    cargv.push_back(nullptr);
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
      envs.emplace_back(*e);
    }
    envs.insert(envs.end(), env.begin(), env.end());
    std::vector<char*> cenv;
    for (auto& e : envs) {
      cenv.push_back(e.data());
    }
    cenv.push_back(nullptr);
    int rc = posix_spawn(&pid_, argv[0].c_str(), &fa, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(pipefd[1]);
    out_fd_ = pipefd[0];
    if (rc != 0) {
      pid_ = -1;
      error_ = std::string("posix_spawn: ") + std::strerror(rc);
      return false;
    }
    while (ports_.size() < listeners) {
      auto line = read_line(milliseconds(10'000));
      if (!line) {
        error_ = "no listening line; output: " + out_;
        return false;
      }
      if (line->rfind("listening ", 0) == 0) {
        ports_.push_back(
            static_cast<uint16_t>(std::atoi(line->substr(line->rfind(':') + 1).c_str())));
      }
    }
    return true;
  }

  uint16_t port(size_t i = 0) const { return i < ports_.size() ? ports_[i] : 0; }
  const std::string& error() const { return error_; }
  const std::string& stats_file() const { return stats_file_; }
  const TempDir& dir() const { return dir_; }
  pid_t pid() const { return pid_; }

  /// Current stats file content (empty when not yet written).
  std::string stats() const { return read_file(stats_file_).value_or(""); }
  double stat(std::string_view key) const { return json_number(stats(), key); }
  /// Polls the stats file until `key` equals `value`.
  bool wait_stat(std::string_view key, double value,
                 milliseconds timeout = milliseconds(10'000)) const {
    return eventually([&] { return stat(key) == value; }, timeout);
  }

  /// SIGTERM, then reads stdout to EOF. Returns the exit status (-1 when
  /// the process did not exit normally); *rest gets the output not yet read.
  int terminate(std::string* rest = nullptr) {
    ::kill(pid_, SIGTERM);
    auto deadline = Clock::now() + milliseconds(20'000);
    while (Clock::now() < deadline && read_some(milliseconds(100)) != 0) {
    }
    int st = 0;
    bool exited = eventually([&] { return ::waitpid(pid_, &st, WNOHANG) == pid_; },
                             std::chrono::duration_cast<milliseconds>(deadline - Clock::now()));
    if (!exited) {
      ::kill(pid_, SIGKILL);  // hung: fail rather than block the suite
      ::waitpid(pid_, &st, 0);
    }
    pid_ = -1;
    if (rest != nullptr) {
      *rest = out_;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

 private:
  // Returns bytes read, 0 at EOF, -1 on timeout.
  ssize_t read_some(milliseconds timeout) {
    pollfd p{out_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) {
      return -1;
    }
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n > 0) {
      out_.append(buf, static_cast<size_t>(n));
    }
    return n < 0 ? -1 : n;
  }
  std::optional<std::string> read_line(milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      size_t nl = out_.find('\n');
      if (nl != std::string::npos) {
        std::string line = out_.substr(0, nl);
        out_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || read_some(left) == 0) {
        return std::nullopt;
      }
    }
  }

  TempDir dir_;
  std::string stats_file_;
  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string out_;
  std::string error_;
  std::vector<uint16_t> ports_;
};

/// One SMTP reply as read by SmtpClient.
struct Reply {
  int code = 0;                    // 0: connection closed or timed out
  std::vector<std::string> lines;  // each line without code and separator
  std::string first() const { return lines.empty() ? "" : lines[0]; }
  /// "250 text" of the last line, for messages.
  std::string str() const {
    return std::to_string(code) + " " + (lines.empty() ? "" : lines.back());
  }
};

/// Reads one (possibly multi-line) SMTP reply with `read_line` (returns
/// one line without CRLF, or nullopt on EOF/timeout); code 0 on failure.
template <class ReadLine>
Reply read_smtp_reply(ReadLine&& read_line) {
  Reply r;
  for (;;) {
    std::optional<std::string> line = read_line();
    if (!line || line->size() < 3) {
      return Reply{};
    }
    r.code = std::atoi(line->substr(0, 3).c_str());
    r.lines.push_back(line->size() > 4 ? line->substr(4) : "");
    if (line->size() < 4 || (*line)[3] == ' ') {
      return r;
    }
  }
}

/// A tiny blocking SMTP client (5 s receive timeout).
class SmtpClient {
 public:
  explicit SmtpClient(uint16_t port, bool ipv6 = false) {
    fd_ = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int rc;
    if (ipv6) {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_port = htons(port);
      a.sin6_addr = in6addr_loopback;
      rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    connected_ = rc == 0;
  }
  ~SmtpClient() { close(); }
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  /// Closes with a reset instead of a FIN.
  void reset() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close();
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  /// Reads one (possibly multi-line) reply; code 0 on EOF or timeout.
  Reply read_reply() {
    return read_smtp_reply([this] { return read_line(); });
  }
  Reply command(std::string_view line) {
    send(std::string(line) + "\r\n");
    return read_reply();
  }
  /// True when the server closed the connection (EOF or reset) with no
  /// further bytes.
  bool closed_by_peer() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  std::optional<std::string> read_line() {
    for (;;) {
      size_t nl = buf_.find("\r\n");
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 2);
        return line;
      }
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        return std::nullopt;
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

}  // namespace ringmail::testing
