/// submission.h — the SMTP submission listeners ([[submission.listeners]]):
/// STARTTLS (port 587 style, RFC 6409), implicit TLS (port 465 style, RFC
/// 8314) and plaintext (port 25 style, for trusted networks only).
///
/// Runs on shard 0's ring, like the batch socket (engine/ingest.h). Each
/// client is a proto::ServerSession (the parser ringmail-sink uses too)
/// driven over its socket: one receive armed, at most one send in flight,
/// TLS through a memory-buffer TlsChannel (engine/tls.h). The listener
/// answers the session's decisions:
///   - RCPT: relay is allowed only for an authenticated session or a client
///     in submission.trusted_networks; everyone else gets 554 5.7.1 (there
///     are no local domains: every recipient is a relay, so this is the
///     whole open-relay defence). Address literals and domain-less
///     recipients are refused (550), as the engine cannot route them.
///   - message: Runtime::submit_batch with the sender, the recipients, the
///     body behind a Received header (RFC 5321 4.4, RFC 3848 protocol
///     names) and the authenticated user (recorded in events as
///     "auth_user"). 250 only when the acknowledgement says accepted, which
///     with the spool on means durable; 452 4.3.1 (queue full), 451 4.3.0
///     (spool unavailable) or 554 (refused) otherwise.
///   - STARTTLS: the handshake starts right after the 220; the session
///     discards whatever plaintext the client pipelined behind STARTTLS
///     (CVE-2011-0411) and forgets all pre-TLS state (RFC 3207 4.2).
///   - AUTH PLAIN/LOGIN, only under TLS: checked against the credentials
///     file (submission_auth.h). An authzid other than the user is refused.
///     Once submission.auth_fail_limit attempts from one client address
///     have failed or are still being checked within
///     submission.auth_fail_window, AUTH gets 454 4.7.0 at once (no
///     password check, no delay held on the shard): an attempt counts from
///     the moment its check is queued, so concurrent attempts cannot race
///     past the limit; a success gives its count back. Checks themselves
///     run on an AuthWorker thread (PBKDF2 takes ~250 ms here): the session
///     waits, the shard does not.
///
/// Limits, each with its reply:
///   - connections per client address (submission.max_sessions_per_ip,
///     sessions and handshakes together): 421 4.7.0 and close, without
///     creating a session (an implicit-TLS listener just closes: a
///     plaintext reply would be noise to a TLS client, and a handshake
///     would spend what the limit protects);
///   - sessions on all listeners (submission.max_sessions): when full, the
///     session that has waited longest for a command, at least
///     submission.reclaim_idle_after, gets 421 4.3.2 and is closed to admit
///     the newcomer (sessions outside a transaction first; never one whose
///     message or AUTH is being decided, or one receiving a message).
///     With nothing to reclaim, the newcomer gets 421 4.7.0 as above;
///   - connections in a TLS handshake (implicit TLS before the greeting,
///     and after STARTTLS) do not hold a session: they count against
///     submission.max_tls_handshakes, and when that is full the oldest
///     handshake is dropped for the new one. A finished handshake then
///     needs a session like any newcomer (421 4.7.0 over TLS without one);
///   - submission.tls_handshake_timeout: the connection is closed;
///   - submission.idle_timeout without input: 421 4.4.2;
///   - submission.command_timeout: a command or AUTH line not complete that
///     long after its first byte (over TLS: its first byte of ciphertext)
///     gets 421 4.4.2, however slowly it is trickled;
///   - message content (DATA, or all chunks of one BDAT transfer) slower
///     on average than submission.data_min_rate after
///     submission.data_rate_grace: 421 4.4.2, and nothing of it is queued;
///   - line length, message size (SIZE advertised), recipients per
///     transaction, commands and errors per session: proto::ServerConfig
///     (500 5.5.2, 552 5.3.4, 452 4.5.3, 421 4.7.0);
///   - smuggling: only <CRLF>.<CRLF> ends DATA; a bare CR or LF in DATA
///     fails the message with 550 5.6.0, and a bare LF ending a command
///     gets 500 (proto/smtp_server.h);
///   - pipelining only as RFC 2920 allows: violations get 554 5.5.0 and
///     close.
/// Memory per client: the session, two 16 KiB buffers, queued replies (at
/// most kMaxQueuedOutput before reading stops) and the message being
/// received (at most the SIZE limit). Clients at once: at most
/// max_sessions + max_tls_handshakes, plus those closing (each for at most
/// submission_internal::kLinger).
///
/// Thread safety: shard 0's thread only. Diagnostics: one log line per
/// AUTH failure ("submission: AUTH failed for user=... from ADDR"), for
/// fail2ban-style tools, and one per client cut off by a deadline; the
/// stats counters submission_auth_checks, submission_reclaimed and
/// submission_timeouts (ShardStats).
/// See also: engine/submission_auth.h, engine/tls.h, docs/tls.md.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "engine/ring.h"
#include "engine/submission_auth.h"
#include "engine/tls.h"
#include "proto/batch_wire.h"
#include "proto/result.h"
#include "proto/smtp_server.h"

namespace ringmail::engine {

class Shard;

/// Opens a listening TCP socket for `l` (SO_REUSEADDR, non-blocking,
/// close-on-exec). Errors name the listener.
[[nodiscard]] Result<int> open_submission_socket(const SubmissionListener& l);

class Submission {
 public:
  /// Reply bytes queued for one client before its session stops being fed.
  /// Threat: a client that pipelines commands and never reads the replies.
  static constexpr size_t kMaxQueuedOutput = 64 * 1024;
  static constexpr size_t kRecvBuffer = 16 * 1024;
  /// Credential checks waiting for the AuthWorker. Threat: an AUTH flood
  /// from many addresses; beyond this AUTH gets 454 4.3.2 at once.
  static constexpr size_t kMaxPendingAuth = 32;

  /// Loads the credentials file and the listeners' certificates. `fds`
  /// are the listening sockets, in the order of submission.listeners.
  [[nodiscard]] static Result<std::unique_ptr<Submission>> create(Shard& shard,
                                                                  const std::vector<int>& fds);
  ~Submission();
  Submission(const Submission&) = delete;
  Submission& operator=(const Submission&) = delete;

  /// The certificate and key of every TLS listener, read again (any
  /// thread): one context per listener in order, null for a listener
  /// without TLS. `tls` supplies the minimum version. Errors name the
  /// listener and the file.
  [[nodiscard]] static Result<std::vector<std::unique_ptr<TlsContext>>> load_tls_contexts(
      const TlsConfig& tls, const SubmissionConfig& sc);
  /// A reload: handshakes from now on use `contexts` (from
  /// load_tls_contexts, same listeners); sessions already in TLS keep
  /// theirs.
  void replace_tls_contexts(std::vector<std::unique_ptr<TlsContext>> contexts);

  void start();
  /// Stops accepting; every client gets 421 4.3.2 and is closed.
  void stop();
  bool stopped() const;
  size_t sessions() const { return conns_.size(); }

  class Conn;

 private:
  struct Listener;
  struct AcceptOp final : Completion {
    Listener* listener = nullptr;
    void complete(int res, uint32_t flags) override;
  };
  struct Listener {
    Submission* owner = nullptr;
    const SubmissionListener* cfg = nullptr;
    int fd = -1;
    std::unique_ptr<TlsContext> tls;  // null for tls = "none"
    proto::ServerConfig server;
    AcceptOp op;
    bool armed = false;
  };
  friend class Conn;

  /// Connections waiting on their client, oldest first; intrusive (no
  /// allocation), and a connection is in at most one list at a time.
  class WaitList {
   public:
    void push_back(Conn* c, TimePoint since);
    void remove(Conn* c);
    Conn* front() const { return head_; }
    size_t size() const { return size_; }

   private:
    Conn* head_ = nullptr;
    Conn* tail_ = nullptr;
    size_t size_ = 0;
  };
  /// Where a connection sits in a WaitList.
  struct WaitLink {
    Conn* prev = nullptr;
    Conn* next = nullptr;
    WaitList* list = nullptr;
    TimePoint since{};  // when it joined the list
  };
  /// What a connection holds against the limits.
  enum class Slot : uint8_t { kNone, kHandshake, kSession };

  explicit Submission(Shard& shard);
  void arm_accept(Listener& l);
  void on_accept(Listener& l, int res, uint32_t flags);
  /// A new connection: refused over a limit, else served.
  void admit(Listener& l, int fd, const sockaddr_storage& peer);
  bool trusted(const sockaddr_storage& addr) const;
  void refuse(const Listener& l, int fd, const char* why);
  /// A connection's last operation completed: forget it (the caller deletes it).
  void conn_closed(Conn* c);
  /// Returns everything `c` holds: its session or handshake slot, its
  /// place in a wait list and its per-address count (once; later calls do
  /// nothing).
  void release_slot(Conn* c);
  /// Counts a new session against max_sessions, closing an idle session
  /// to make room when full. False when there is none to close.
  bool take_session_slot(TimePoint now);
  /// True when take_session_slot() would succeed.
  bool can_admit(TimePoint now) const;
  /// The session to close for a newcomer when full, or null: the front of
  /// idle_ (else idle_tx_) once it has waited reclaim_idle_after.
  Conn* reclaim_candidate(TimePoint now) const;
  /// `c` starts a TLS handshake: its session slot (if any) becomes a
  /// handshake slot, dropping the oldest handshake when all are taken.
  void begin_handshake(Conn* c, TimePoint now);
  /// `c`'s handshake succeeded: its handshake slot becomes a session slot.
  /// False (no slot held) when max_sessions is full with nothing to reclaim.
  bool finish_handshake(Conn* c, TimePoint now);
  void on_ack(uint64_t conn, proto::Ack ack);
  /// Queues `a` on the AuthWorker; false when it is busy (or AUTH is off).
  /// The caller has counted the attempt (AuthFailureLimiter::begin()); the
  /// result ends it (on_auth_result()).
  bool check_auth(Conn* c, const proto::AuthRequest& a);
  void on_auth_result(uint64_t conn, const std::string& key, const std::string& peer,
                      const std::string& user, bool ok);
  void log_auth_failure(const std::string& peer, std::string_view user);

  Shard& shard_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  CredentialStore creds_;
  std::unique_ptr<AuthWorker> auth_;  // after creds_: destroyed (joined) first
  uint32_t auth_inflight_ = 0;        // checks queued or running, results not yet back
  AuthFailureLimiter limiter_;
  std::vector<Cidr> trusted_;
  std::unordered_map<uint64_t, Conn*> conns_;
  std::unordered_map<std::string, uint32_t> per_client_;  // connections per client_key()
  uint32_t admitted_ = 0;                                 // sessions counted against max_sessions
  WaitList handshakes_;  // in a TLS handshake: the max_tls_handshakes slots
  WaitList idle_;        // sessions waiting for a command, outside a transaction
  WaitList idle_tx_;     // sessions waiting for a command inside one
  uint64_t next_id_ = 1;
  uint64_t refused_ = 0;    // connections over max_sessions / max_sessions_per_ip
  uint64_t reclaimed_ = 0;  // idle sessions closed for a newcomer
  uint64_t dropped_ = 0;    // handshakes dropped for a newer one
  bool stopping_ = false;
};

}  // namespace ringmail::engine
