/// service_notify.h — ringmaild's side of the service manager notification
/// protocol (systemd's sd_notify(3)), implemented from the protocol itself:
///
///   - the manager names a socket in $NOTIFY_SOCKET: an absolute path, or
///     an abstract-namespace name when it starts with '@';
///   - the service sends datagrams of newline-separated VAR=VALUE lines:
///     READY=1 (start-up finished), RELOADING=1 with MONOTONIC_USEC=,
///     STOPPING=1, STATUS=<one line for humans>, WATCHDOG=1 (keepalive);
///   - with a watchdog, $WATCHDOG_USEC is the period within which a
///     keepalive must arrive, and $WATCHDOG_PID (when set) the process it
///     is meant for.
///
/// No dependency on libsystemd: a datagram is all it takes. Without
/// $NOTIFY_SOCKET (not run by a service manager) everything is a no-op.
///
/// LivenessCheck is the keepalive rule: ringmaild sends WATCHDOG=1 only
/// when every shard's loop turned since the previous look, so a shard stuck
/// in a callback or a system call lets the watchdog fire.
///
/// Thread safety: one ServiceNotifier and one LivenessCheck per daemon,
/// used from its main thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::tools {

struct NotifyEnv {
  std::string socket;  // empty: no service manager to notify
  /// The watchdog period, when the manager runs one for this process.
  std::optional<std::chrono::microseconds> watchdog;
};

/// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID through `get`
/// (getenv in ringmaild; null for an unset variable). A socket that is
/// neither an absolute path nor '@'-prefixed is ignored; the watchdog
/// counts only when WATCHDOG_USEC is a positive decimal and WATCHDOG_PID is
/// unset or equals `self`.
NotifyEnv read_notify_env(const std::function<const char*(const char*)>& get, pid_t self);

class ServiceNotifier {
 public:
  /// `socket` as in NotifyEnv; empty: every send() is a no-op.
  explicit ServiceNotifier(std::string socket);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  bool enabled() const { return !socket_.empty(); }
  /// Sends `state` ("READY=1\nSTATUS=...") as one datagram, without
  /// blocking. Errors (socket, address, sendto) are returned for the
  /// caller to log; the daemon goes on without its manager's view.
  Result<void> send(std::string_view state);

 private:
  std::string socket_;
  int fd_ = -1;
};

/// Decides, from the shards' loop iteration counts
/// (Engine::loop_iterations), whether a keepalive is deserved.
class LivenessCheck {
 public:
  /// True when every count moved since the previous call. The first call
  /// only records; an empty vector (no shards) is never alive.
  bool all_turned(const std::vector<uint64_t>& iterations);
  /// The shards that had not moved at the last call.
  const std::vector<uint32_t>& stuck() const { return stuck_; }

 private:
  std::vector<uint64_t> last_;
  std::vector<uint32_t> stuck_;
};

}  // namespace ringmail::tools
