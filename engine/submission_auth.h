/// submission_auth.h — the security pieces of the submission listener:
/// the credentials file, the per-address AUTH failure limiter, and
/// trusted-network matching.
///
/// Credentials file (submission.credentials_file): one user per line,
///     user:iterations:salt-hex:hash-hex
/// where hash = PBKDF2-HMAC-SHA256(password, salt, iterations, 32 bytes)
/// (wolfSSL's wc_PBKDF2). `#` starts a comment line; blank lines are
/// ignored. No plaintext password is ever stored or accepted in the file.
/// `ringmail-passwd USER` prints a line (random 16-byte salt,
/// kDefaultIterations). Verification runs the same PBKDF2 work for an
/// unknown user (against a dummy entry) and compares in constant time, so
/// neither the reply nor the time tells whether a user exists.
///
/// Cost: one verification is one PBKDF2 run: about 250 ms at 100,000
/// iterations with Debian's wolfSSL 5.5.4 on this project's test machine
/// (OpenSSL's is about 5x faster). That is far too long for a shard's
/// loop, so checks run on an AuthWorker thread; the failure limiter bounds
/// what one address can make us spend.
///
/// Threads: a CredentialStore is immutable after load (any thread); an
/// AuthFailureLimiter belongs to the listener's shard.
/// See also: engine/submission.h, tools/ringmail_passwd.cc, docs/tls.md.
#pragma once

#include <sys/socket.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "proto/result.h"

namespace ringmail::engine {

inline constexpr size_t kPbkdf2HashBytes = 32;  // SHA-256 output
inline constexpr size_t kPbkdf2SaltBytes = 16;

class CredentialStore {
 public:
  /// ringmail-passwd's default. OWASP's 2023 floor for PBKDF2-HMAC-SHA256
  /// is 600,000; with this wolfSSL that is 1.5 s of CPU per login, so the
  /// default is 100,000 (about 250 ms). Raise it with -i.
  static constexpr uint32_t kDefaultIterations = 100'000;
  static constexpr uint32_t kMinIterations = 1'000;
  static constexpr uint32_t kMaxIterations = 10'000'000;
  /// Threat: a huge file is a configuration error, not something to load.
  static constexpr size_t kMaxUsers = 100'000;

  CredentialStore() = default;
  /// Reads and parses a credentials file. Errors name the file and line.
  [[nodiscard]] static Result<CredentialStore> load(const std::string& path);
  /// Parses credentials text; `origin` names it in errors.
  [[nodiscard]] static Result<CredentialStore> parse(std::string_view text,
                                                     std::string_view origin);

  /// True when `password` is `user`'s. Same work and same answer shape for
  /// an unknown user as for a wrong password.
  bool verify(std::string_view user, std::string_view password) const;
  size_t size() const { return users_.size(); }
  bool empty() const { return users_.empty(); }

 private:
  struct Entry {
    uint32_t iterations = 0;
    std::vector<uint8_t> salt;
    std::array<uint8_t, kPbkdf2HashBytes> hash{};
  };
  static bool check(const Entry& e, std::string_view password);

  std::unordered_map<std::string, Entry> users_;
  Entry dummy_;  // for unknown users: the cost of a real entry
};

/// Runs CredentialStore::verify on one background thread, so a slow hash
/// never stalls the shard that serves the session. Jobs wait in a bounded
/// FIFO (threat: a flood of AUTH attempts from many addresses must not
/// queue unbounded work; submit() refuses beyond max_pending and the
/// listener answers 454). `done` runs on the worker thread: the caller
/// posts the result back to its shard. Passwords are wiped once hashed.
class AuthWorker {
 public:
  using Done = std::function<void(bool ok)>;

  AuthWorker(const CredentialStore* store, size_t max_pending);
  /// Drops waiting jobs (their `done` never runs) and joins the thread.
  ~AuthWorker();
  AuthWorker(const AuthWorker&) = delete;
  AuthWorker& operator=(const AuthWorker&) = delete;

  /// Queues a check. False (nothing queued) when max_pending jobs wait.
  bool submit(std::string user, std::string password, Done done);
  /// Drops the jobs not yet started; returns how many (their `done` never
  /// runs). A job already running completes normally.
  size_t cancel_pending();

 private:
  struct Job {
    std::string user;
    std::string password;
    Done done;
  };
  void run();

  const CredentialStore* store_;
  size_t max_pending_;
  std::mutex mu_;  // AUTH is rare and slow: never on the delivery path
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

/// PBKDF2-HMAC-SHA256. Error only if wolfSSL refuses the parameters.
[[nodiscard]] Result<std::array<uint8_t, kPbkdf2HashBytes>> pbkdf2_sha256(
    std::string_view password, std::span<const uint8_t> salt, uint32_t iterations);

/// A credentials line for `user` with a fresh random salt. Errors: a user
/// name with ':', control bytes or nothing in it; iterations out of range.
[[nodiscard]] Result<std::string> make_credential_line(std::string_view user,
                                                       std::string_view password,
                                                       uint32_t iterations);

/// Failed AUTH attempts per client address in fixed windows of `window`:
/// once `limit` failures are counted in the current window, blocked() is
/// true until it ends. Threat: password guessing and spraying; a blocked
/// address gets a 4xx at once, without a PBKDF2 run.
/// An attempt counts from the moment its check starts (begin(): pending)
/// until its result (end()): a failure stays counted, a success gives its
/// count back. So concurrent attempts from one address (threat: twenty
/// sessions sending AUTH at once, all before the first result) never start
/// more than `limit` checks.
/// Bounds: at most kMaxTracked addresses. When full, windows that ended are
/// dropped (never an address with checks pending); if every entry is live,
/// new addresses are blocked (fail closed: an attacker filling the table
/// must not unblock itself).
class AuthFailureLimiter {
 public:
  static constexpr size_t kMaxTracked = 65'536;

  AuthFailureLimiter(uint32_t limit, Millis window) : limit_(limit), window_(window) {}
  /// True when failures plus pending checks have reached the limit.
  bool blocked(const std::string& addr, TimePoint now);
  /// Counts an attempt whose check is about to start. False, with nothing
  /// counted, when `addr` is blocked.
  [[nodiscard]] bool begin(const std::string& addr, TimePoint now);
  /// The check of an attempt counted by begin() ended (or never ran:
  /// failed = false). A failure counts in the window current at `now`.
  void end(const std::string& addr, TimePoint now, bool failed);
  /// A failure decided without a check.
  void record_failure(const std::string& addr, TimePoint now);
  size_t tracked() const { return entries_.size(); }

 private:
  struct Entry {
    TimePoint start;
    uint32_t failures = 0;
    uint32_t pending = 0;  // checks started and not yet ended
  };
  /// The entry for `addr` with its window brought up to `now`, created when
  /// missing; null when the table is full of live entries.
  Entry* entry(const std::string& addr, TimePoint now);
  bool make_room(TimePoint now);

  uint32_t limit_;
  Millis window_;
  std::unordered_map<std::string, Entry> entries_;
};

/// One trusted_networks entry.
struct Cidr {
  int family = AF_INET;
  std::array<uint8_t, 16> addr{};
  uint32_t prefix = 0;
};
[[nodiscard]] Result<Cidr> parse_cidr(std::string_view text);
/// IPv4-mapped IPv6 clients (::ffff:a.b.c.d) match IPv4 entries.
bool cidr_contains(const Cidr& net, const sockaddr_storage& addr);

/// The key limits are counted under: the IPv4 address, or the /64 of an
/// IPv6 address (one host owns a whole /64; per-address limits on IPv6
/// would be no limit at all). IPv4-mapped IPv6 counts as IPv4.
std::string client_key(const sockaddr_storage& addr);

}  // namespace ringmail::engine
