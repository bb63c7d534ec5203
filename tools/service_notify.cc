#include "tools/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstring>

namespace ringmail::tools {
namespace {

/// A positive decimal that fits, or nothing.
std::optional<uint64_t> positive_decimal(const char* text) {
  if (text == nullptr || *text == '\0') {
    return std::nullopt;
  }
  std::string_view v(text);
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n == 0) {
    return std::nullopt;
  }
  return n;
}

}  // namespace

NotifyEnv read_notify_env(const std::function<const char*(const char*)>& get, pid_t self) {
  NotifyEnv env;
  if (const char* s = get("NOTIFY_SOCKET"); s != nullptr && (s[0] == '/' || s[0] == '@')) {
    env.socket = s;
  }
  auto usec = positive_decimal(get("WATCHDOG_USEC"));
  const char* pid_text = get("WATCHDOG_PID");
  bool ours = pid_text == nullptr;
  if (auto pid = positive_decimal(pid_text)) {
    ours = *pid == static_cast<uint64_t>(self);
  }
  if (usec && ours) {
    env.watchdog = std::chrono::microseconds(*usec);
  }
  return env;
}

ServiceNotifier::ServiceNotifier(std::string socket) : socket_(std::move(socket)) {}

ServiceNotifier::~ServiceNotifier() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

Result<void> ServiceNotifier::send(std::string_view state) {
  if (socket_.empty()) {
    return ok_result();
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.size() >= sizeof addr.sun_path) {
    return make_error(Errc::kConfig, "NOTIFY_SOCKET " + socket_ + ": name too long");
  }
  socklen_t len = sizeof addr;
  if (socket_[0] == '@') {
    // Abstract namespace: a leading NUL, and the length says where the
    // name ends (no terminating NUL belongs to it).
    std::memcpy(addr.sun_path + 1, socket_.data() + 1, socket_.size() - 1);
    len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size());
  } else {
    std::memcpy(addr.sun_path, socket_.c_str(), socket_.size() + 1);
  }
  if (fd_ < 0) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) {
      return make_error(Errc::kIo, std::string("NOTIFY_SOCKET: socket: ") + std::strerror(errno));
    }
  }
  ssize_t n = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL,
                       reinterpret_cast<const sockaddr*>(&addr), len);
  if (n < 0) {
    return make_error(Errc::kIo, "NOTIFY_SOCKET " + socket_ + ": " + std::strerror(errno));
  }
  return ok_result();
}

bool LivenessCheck::all_turned(const std::vector<uint64_t>& iterations) {
  stuck_.clear();
  const bool first = last_.empty();
  for (size_t i = 0; i < iterations.size(); ++i) {
    if (!first && (i >= last_.size() || iterations[i] == last_[i])) {
      stuck_.push_back(static_cast<uint32_t>(i));
    }
  }
  last_ = iterations;
  return !first && !iterations.empty() && stuck_.empty();
}

}  // namespace ringmail::tools
