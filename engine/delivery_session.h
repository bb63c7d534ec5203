/// delivery_session.h — one SMTP client session as a pure state machine.
///
/// No sockets, no clocks: the driver (SmtpConnection) feeds it received
/// bytes, timeouts and closes; the session appends what to send to out()
/// and reports per-recipient outcomes to its SessionObserver. Tests drive it
/// with scripted replies (tests/engine/delivery_session_test.cc).
///
/// Pipelining (RFC 2920) uses two cursors, as Postfix's smtp_loop does: the
/// send cursor runs ahead through MAIL, RCPT... and DATA (a sync point: the
/// body waits for 354) or BDAT LAST with its chunk (not a sync point, so the
/// next transaction follows in the same flight); the receive cursor is the
/// queue of expected replies, matched strictly in order. A reply that
/// arrives when none is expected, or a reply code impossible for the
/// command it answers, is a desync: the session fails and every undecided
/// recipient is deferred (never guessed, never bounced).
///
/// Classification of every reply, per recipient:
///   - MAIL 4xx/5xx: every recipient of the transaction deferred/bounced;
///   - RCPT 2xx accepted; 4xx deferred; 5xx bounced, except 552 which RFC
///     5321 4.5.3.1.10 says to treat as 452 (deferred);
///   - DATA (non-354) or end of data / BDAT LAST: the accepted recipients
///     get the reply's class (2xx delivered);
///   - 421 anywhere: the reply's recipients deferred, then the session ends
///     and everything still undecided is deferred;
///   - local failures (timeout, connection lost, protocol error, greeting
///     refused, EHLO and HELO refused): deferred with a synthetic 4xx reply
///     saying what happened. A connection lost or a timeout after the whole
///     body was sent and before its reply is an *unknown* outcome (the
///     message may have been accepted): deferred with `unknown` set, the
///     source of possible duplicates (RFC 5321 6.1).
/// Before a transaction starts, SIZE (RFC 1870) and SMTPUTF8 (RFC 6531)
/// are checked against the server's EHLO: a message over a credible SIZE
/// limit bounces with 5.3.4, and a UTF-8 address to a server without
/// SMTPUTF8 bounces with 5.6.7, without sending anything.
///
/// TLS (RFC 3207) and AUTH (RFC 4954), before the session is ready:
///   - with a TLS policy other than none and STARTTLS offered, the session
///     sends STARTTLS alone (never pipelined). On 220 it moves to
///     Phase::kTlsHandshake and waits for the driver to run the handshake
///     (on_tls_established / on_tls_failed). A reply byte already queued
///     behind the 220 is response injection (a man in the middle appending
///     replies before the handshake, "NO STARTTLS", USENIX Security '21):
///     the session treats it as a TLS failure and uses nothing of it.
///   - after the handshake everything learnt before is dropped and EHLO is
///     sent again; only the post-TLS capabilities count (RFC 3207 4.2).
///   - policy required/verify without STARTTLS offered, or with STARTTLS
///     refused: every recipient is deferred with 451 4.7.4 (stage tls) and
///     the session QUITs. Opportunistic goes on in plaintext; when the
///     handshake itself fails, plaintext_retry_wanted() asks the driver
///     for a new plaintext connection (the TLS state cannot be unwound).
///   - AUTH PLAIN (preferred) or LOGIN when credentials are configured,
///     only over TLS unless auth_plaintext. A refusal (535...) or no usable
///     mechanism defers (stage auth): a configuration problem must never
///     bounce mail.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "engine/message.h"
#include "engine/out_buffer.h"
#include "proto/esmtp_caps.h"
#include "proto/smtp_reply.h"

namespace ringmail::engine {

enum class Disposition : uint8_t { kDelivered, kDeferred, kBounced };
std::string_view disposition_name(Disposition d);

/// The step of the session a reply or failure belongs to.
enum class Stage : uint8_t {
  kConnect,
  kGreeting,
  kEhlo,
  kHelo,
  kMail,
  kRcpt,
  kData,
  kBody,  // end of data, or BDAT LAST
  kRset,
  kQuit,
  kLocal,  // decided before sending (SIZE, SMTPUTF8), or expiry
  kDns,    // routing: MX or address lookup
  kTls,    // STARTTLS, the TLS handshake, or the TLS policy
  kAuth,   // AUTH to a smart host
};
std::string_view stage_name(Stage s);

struct Outcome {
  Disposition disposition = Disposition::kDeferred;
  Stage stage = Stage::kLocal;
  bool unknown = false;                 // the server may have accepted the message
  const proto::Reply* reply = nullptr;  // valid during the callback only
};

/// One transaction: one message, up to max_rcpts_per_txn recipients.
struct SessionTxn {
  MessageRef msg;
  std::vector<std::string_view> rcpts;  // storage owned by the scheduler
  std::string_view vars;  // personalisation values (one-recipient transactions), or empty
  uint64_t cookie = 0;    // the scheduler's handle
};

class SessionObserver {
 public:
  /// A final outcome for recipient `index` of `txn` in this session. Called
  /// exactly once per recipient of every transaction passed to add_txn()
  /// (unless it was returned unattempted through on_txn_returned).
  virtual void on_rcpt_outcome(const SessionTxn& txn, size_t index, const Outcome& outcome) = 0;
  /// Every recipient of `txn` has had its outcome; the session drops it next.
  virtual void on_txn_done(SessionTxn& txn) = 0;
  /// A transaction the session accepted but never started (the session
  /// failed first). No outcome was reported; the scheduler may requeue it
  /// without counting an attempt.
  virtual void on_txn_returned(SessionTxn&& txn) = 0;

 protected:
  ~SessionObserver() = default;
};

class DeliverySession {
 public:
  struct Options {
    std::string ehlo_name = "localhost";
    bool pipelining = true;  // use PIPELINING when offered
    bool chunking = true;    // use CHUNKING/BDAT when offered
    uint32_t max_pipelined_txns = 4;
    uint32_t max_txns = 1000;  // per connection
    proto::ReplyParser::Limits reply_limits;
    /// STARTTLS policy (Shaping::tls). kNone never sends STARTTLS.
    TlsPolicy tls = TlsPolicy::kNone;
    /// The driver completed a TLS handshake before on_connected() (port
    /// 465 style): TLS is active from the greeting on.
    bool implicit_tls = false;
    /// AUTH to the server when auth_user is set.
    std::string auth_user;
    std::string auth_password;
    bool auth_plaintext = false;  // allow AUTH without TLS
  };

  enum class Phase : uint8_t {
    kConnecting,
    kGreeting,
    kEhlo,
    kHelo,
    kStartTls,      // STARTTLS sent, waiting for 220
    kTlsHandshake,  // the driver runs the handshake, then on_tls_established/failed
    kAuth,          // AUTH exchange
    kReady,
    kQuitting,
    kDone,
  };

  /// What the session is waiting for, for the driver's timers.
  enum class Wait : uint8_t {
    kNone,
    kGreeting,
    kEhlo,
    kMail,
    kRcpt,
    kDataInit,
    kDataDone,
    kRset,
    kQuit,
    kStartTls,
    kAuth,
  };

  DeliverySession(Options options, SessionObserver* observer);
  DeliverySession(const DeliverySession&) = delete;
  DeliverySession& operator=(const DeliverySession&) = delete;

  // --- driver -> session ---------------------------------------------------
  void on_connected();
  void on_data(std::span<const char> bytes);
  /// The reply the session is waiting for did not come in time.
  void on_timeout();
  /// The connection is gone (peer close, reset, local error); `what` says
  /// why, for the synthetic replies.
  void on_closed(std::string_view what);
  /// The connection could not be established (refused, timeout, ...).
  void on_connect_failed(std::string_view what);
  /// Queues a transaction. Precondition: can_accept_txn().
  void add_txn(SessionTxn txn);
  /// No more work for this session: QUIT once what is in flight is done.
  void quit();
  /// Overrides the STARTTLS policy before the connection is up (the driver
  /// skips STARTTLS for a host whose handshake failed recently).
  /// Precondition: phase() == kConnecting.
  void set_tls_policy(TlsPolicy policy);
  /// The handshake after STARTTLS succeeded. Precondition: kTlsHandshake.
  void on_tls_established();
  /// The handshake failed (or could not start); `what` says why. Valid in
  /// kTlsHandshake, and in kConnecting for implicit TLS.
  void on_tls_failed(std::string_view what);

  // --- session -> driver ---------------------------------------------------
  OutBuffer& out() { return out_; }
  Phase phase() const { return phase_; }
  bool done() const { return phase_ == Phase::kDone; }
  /// Ready, below the pipelining window and the per-connection limit.
  bool can_accept_txn() const;
  /// The driver sent every byte out() held: bodies queued so far are on
  /// the wire. Only then can a lost connection leave a recipient's outcome
  /// unknown (the server may have received the final dot and accepted).
  void on_output_flushed();
  /// Ready with nothing in flight or queued.
  bool idle() const;
  Wait wait() const;
  /// Changes every time a new reply wait begins, so the driver can arm the
  /// reply timer once per wait (a per-request deadline: trickled bytes do
  /// not extend it).
  uint64_t wait_generation() const { return wait_gen_; }
  /// True when the session ended because the server was unusable
  /// (greeting or EHLO/HELO refused, connection failure, 421): the scheduler
  /// treats the destination as failing, not just this transaction.
  bool failed_before_ready() const { return failed_before_ready_; }
  const proto::Capabilities& caps() const { return caps_; }
  /// The reply that ended the session, if any (for logs).
  const std::optional<proto::Reply>& last_error() const { return last_error_; }
  uint32_t txns_started() const { return txns_started_; }
  /// True when the last outcome sequence included a 421 or a throttling
  /// signal (adaptive backoff input for the scheduler).
  bool server_closing() const { return server_closing_; }
  /// STARTTLS or implicit TLS is up.
  bool tls_active() const { return tls_active_; }
  /// The session ended on a failed opportunistic handshake: the driver
  /// should reconnect to the same host without STARTTLS.
  bool plaintext_retry_wanted() const { return plaintext_retry_; }
  /// Where a session that failed before ready failed: kTls, kAuth, or
  /// kConnect for everything else (refused greeting, EHLO, connection).
  Stage failure_stage() const { return failure_stage_; }

 private:
  enum class ExpectKind : uint8_t {
    kGreeting,
    kEhlo,
    kHelo,
    kMail,
    kRcpt,
    kData,
    kBody,
    kRset,
    kQuit,
    kStartTls,
    kAuth,
  };
  enum class AuthStep : uint8_t { kPlain, kLoginUser, kLoginPassword, kLoginDone };
  struct Expect {
    ExpectKind kind;
    uint32_t rcpt = 0;
    uint64_t txn_seq = 0;
  };
  enum class RcptState : uint8_t { kPending, kAccepted, kDone };
  enum class Step : uint8_t { kMail, kRcpt, kData, kWait354, kAwaitFinal, kFinished };
  struct Txn {
    SessionTxn t;
    uint64_t seq = 0;
    std::vector<RcptState> rcpts;
    Step step = Step::kMail;
    uint32_t next_rcpt = 0;     // send cursor (non-pipelined)
    uint32_t replies_rcpt = 0;  // RCPT replies received
    uint32_t accepted = 0;
    uint32_t undecided = 0;
    uint32_t outstanding = 0;  // expected replies not yet received
    bool mail_failed = false;
    bool use_bdat = false;
    bool body_sent = false;     // queued in out()
    bool body_on_wire = false;  // ...and every byte of it handed to the socket
  };

  void handle_reply(const proto::Reply& r);
  void on_greeting(const proto::Reply& r);
  void on_ehlo(const proto::Reply& r, bool helo);
  void on_starttls_reply(const proto::Reply& r);
  void on_auth_reply(const proto::Reply& r);
  /// After the last EHLO: AUTH when configured, else ready.
  void begin_session();
  void start_auth();
  bool tls_mandatory() const {
    return options_.tls == TlsPolicy::kRequired || options_.tls == TlsPolicy::kVerify;
  }
  /// Ends the session before ready for a policy reason, still in sync with
  /// the server: defers (via fail) and says QUIT.
  void refuse(Stage stage, const proto::Reply& reply);
  void on_mail(Txn& t, const proto::Reply& r);
  void on_rcpt(Txn& t, uint32_t i, const proto::Reply& r);
  void on_data_reply(Txn& t, const proto::Reply& r);
  void on_body_reply(Txn& t, const proto::Reply& r);
  void after_rcpts(Txn& t);
  Txn* find_txn(uint64_t seq);
  void decide(Txn& t, uint32_t i, Disposition d, Stage s, const proto::Reply& r,
              bool unknown = false);
  void decide_all(Txn& t, Disposition d, Stage s, const proto::Reply& r, bool accepted_only);
  void finish_done_txns();
  void pump();
  bool start_txn(Txn& t);
  void send_body(Txn& t);
  void expect(ExpectKind kind, uint64_t seq = 0, uint32_t rcpt = 0);
  void fail(const proto::Reply& reply, bool before_ready);
  void protocol_error(std::string_view what);
  void send_quit();
  bool local_checks(Txn& t);

  Options options_;
  SessionObserver* observer_;
  OutBuffer out_;
  proto::ReplyParser parser_;
  proto::Capabilities caps_;
  Phase phase_ = Phase::kConnecting;
  std::deque<Expect> expects_;
  std::deque<Txn> txns_;  // started or queued, in order
  uint64_t next_seq_ = 1;
  uint64_t wait_gen_ = 0;
  uint32_t txns_started_ = 0;
  bool quit_requested_ = false;
  bool need_rset_ = false;  // the server may hold state from an unfinished transaction
  bool failed_before_ready_ = false;
  bool server_closing_ = false;
  bool in_reply_ = false;
  bool surplus_ = false;  // bytes followed the reply being handled, in the same input
  bool tls_active_ = false;
  bool plaintext_retry_ = false;
  AuthStep auth_step_ = AuthStep::kPlain;
  Stage failure_stage_ = Stage::kConnect;
  std::optional<proto::Reply> last_error_;
};

/// RFC 5321 classification of a reply received at `stage`.
Disposition classify_reply(const proto::Reply& r, Stage stage);

}  // namespace ringmail::engine
