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
  };

  enum class Phase : uint8_t { kConnecting, kGreeting, kEhlo, kHelo, kReady, kQuitting, kDone };

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

  // --- session -> driver ---------------------------------------------------
  OutBuffer& out() { return out_; }
  Phase phase() const { return phase_; }
  bool done() const { return phase_ == Phase::kDone; }
  /// Ready, below the pipelining window and the per-connection limit.
  bool can_accept_txn() const;
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
    kQuit
  };
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
    bool body_sent = false;
  };

  void handle_reply(const proto::Reply& r);
  void on_greeting(const proto::Reply& r);
  void on_ehlo(const proto::Reply& r, bool helo);
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
  std::optional<proto::Reply> last_error_;
};

/// RFC 5321 classification of a reply received at `stage`.
Disposition classify_reply(const proto::Reply& r, Stage stage);

}  // namespace ringmail::engine
