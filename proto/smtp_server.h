/// smtp_server.h — the server side of SMTP as sans-IO state machines: a
/// CRLF line framer, a command parser, and a session that sequences the
/// protocol, writes replies and asks its driver for every decision.
///
/// Users: ringmail-sink (tests and benchmarks) and the authenticated
/// submission listener. The session does no I/O, reads no clock and keeps
/// no global state; the driver moves bytes, runs TLS and timers, and
/// answers decisions (possibly asynchronously, e.g. after spooling).
///
/// Thread safety: every object here is used by one thread at a time (the
/// connection's home shard). No shared state.
///
/// Driver loop (see ServerSession for the exact contract):
///
///     ServerSession s(config);
///     s.start();                                  // 220 greeting
///     for (;;) {
///       auto [n, action] = s.feed(input);         // input: bytes read, not yet consumed
///       input.drop_front(n);
///       if (action == Action::kDecide) { answer(s.decision()); continue; }  // accept()/respond()
///       send(s.output()); s.consume_output(s.output().size());
///       if (action == Action::kClose) { close(); break; }
///       if (action == Action::kStartTls) { handshake(); s.tls_established(); continue; }
///       if (action == Action::kNeedInput) { read_more(input); }             // kFlush: just loop
///     }
///
/// Protocol behaviour (RFC 5321 unless noted):
///   - Sequencing: 503 5.5.1 for commands out of order; 501 5.5.4 for bad
///     arguments; 500 5.5.2 for unknown verbs and overlong lines; 555 5.5.4
///     for unknown or unadvertised MAIL/RCPT parameters; 554 5.5.1 for DATA
///     or BDAT without an accepted recipient; 221 on QUIT.
///   - DATA is read by DataReader: only <CRLF>.<CRLF> ends it; a bare CR or
///     LF under BareLinePolicy::kReject fails the message with 550 5.6.0
///     (the SMTP smuggling class, CVE-2023-51764). A message over
///     max_message gets 552 5.3.4; storage stops at the limit but the stream
///     is read to its end so the session stays in sync.
///   - BDAT (RFC 3030): chunk bytes are always consumed, even when the BDAT
///     is refused (no MAIL, no recipient, an earlier chunk failed, CHUNKING
///     off), so the stream stays in sync. A BDAT line whose size cannot be
///     parsed (overflow, junk) cannot be resynchronised: 501 and close.
///   - Unauthorised pipelining (Postfix smtpd_forbid_unauth_pipelining): a
///     client that sends more bytes before our reply, when PIPELINING is not
///     in effect (not advertised, or HELO instead of EHLO), or after a
///     command that must end a pipelined group (EHLO, HELO, DATA, NOOP,
///     VRFY, HELP, AUTH other than PLAIN with an initial response; RFC 2920
///     3.1, RFC 4954 4), or during an AUTH exchange, or before the greeting
///     (bytes fed before start()), gets "554 5.5.0 Error: SMTP protocol
///     synchronization" and the session closes. Without PIPELINING in effect
///     the same holds for bytes following the end of data or a BDAT chunk.
///     Detection sees the bytes the driver passed to the same feed() call,
///     so drivers should feed everything they have read.
///   - STARTTLS (RFC 3207): once the driver accepts it, every plaintext byte
///     the client pipelined after the STARTTLS line is discarded and counted
///     (plaintext_discarded(): CVE-2011-0411, command injection), and after
///     tls_established() all knowledge from before TLS is dropped: HELO
///     name, AUTH state, transaction (RFC 3207 4.2). Counters survive.
///   - AUTH PLAIN and LOGIN (RFC 4954) with 334 continuations and "*" to
///     cancel (501). The credential check is a driver decision. Without TLS
///     AUTH is neither advertised nor accepted (538 5.7.11) unless
///     allow_plaintext_auth is set.
///   - Budgets: max_hard_errors error replies (4xx/5xx except 452 "too many
///     recipients", reset by an accepted message) and max_commands command
///     lines per session; reaching either ends the session with 421 4.7.0.
///
/// Limits are in ServerConfig; each says what it protects against.
/// Diagnostics: close_reason() names why the session closed.
/// See also: message_body.h (DataReader), address.h (parse_mailbox),
/// esmtp_caps.h (the client's view of the EHLO reply).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/address.h"
#include "proto/esmtp_caps.h"
#include "proto/message_body.h"
#include "proto/parse.h"
#include "proto/result.h"

namespace ringmail::proto {

// ---------------------------------------------------------------------------
// Line framing

/// Splits a byte stream into lines ending in CRLF, with a length cap.
class LineFramer {
 public:
  struct Limits {
    /// Bytes per line, without the line end. RFC 5321 4.5.3.1.4 requires at
    /// least 512 with CRLF. Threat: a 10 MB line without LF; the stash never
    /// holds more than max_line + 1 bytes.
    size_t max_line = 2048;
    /// Accept a bare LF as a line end. Off by default: a bare LF in commands
    /// is how smuggling-style desyncs start (Postfix smtpd_forbid_bare_newline).
    bool allow_bare_lf = false;
  };

  LineFramer() : LineFramer(Limits{}) {}
  explicit LineFramer(Limits limits);

  /// See parse.h.
  /// kDone: line() holds one line without its line end, valid until the next
  ///   call; `consumed` ends right after the LF.
  /// kNeedMore: everything was consumed (a partial line is stashed, or an
  ///   overlong line is being skipped).
  /// kError: error().code is kLimit (line longer than max_line: it was
  ///   skipped up to and including its LF) or kProtocol (bare LF line end);
  ///   `consumed` ends right after that LF, so the caller can answer and go
  ///   on with the next line.
  ParseResult feed(std::span<const char> in);

  std::string_view line() const { return line_; }
  const Error& error() const { return error_; }
  /// Changes the cap for the following lines (AUTH exchanges allow longer ones).
  void set_max_line(size_t max_line) { limits_.max_line = max_line; }
  size_t max_line() const { return limits_.max_line; }
  /// True while bytes of an unfinished line are held (or skipped).
  bool has_partial() const { return (!stash_.empty() && !line_in_stash_) || skipping_; }
  void reset();

 private:
  ParseResult line_error(Errc code, const char* what, size_t consumed);

  Limits limits_;
  std::string stash_;
  std::string_view line_;
  Error error_;
  bool skipping_ = false;       // discarding the rest of an overlong line
  bool line_in_stash_ = false;  // line_ views stash_; clear it on the next call
};

// ---------------------------------------------------------------------------
// Commands

enum class SmtpVerb : uint8_t {
  kUnknown,
  kEhlo,
  kHelo,
  kMail,
  kRcpt,
  kData,
  kBdat,
  kRset,
  kNoop,
  kQuit,
  kVrfy,
  kHelp,
  kStartTls,
  kAuth,
};

/// "EHLO", "MAIL", ... ("UNKNOWN" for kUnknown).
std::string_view verb_name(SmtpVerb verb);

enum class BodyParam : uint8_t { kNone, k7Bit, k8BitMime, kBinaryMime };
enum class RetParam : uint8_t { kNone, kFull, kHdrs };
enum NotifyFlag : uint8_t {
  kNotifyNever = 1u << 0,
  kNotifySuccess = 1u << 1,
  kNotifyFailure = 1u << 2,
  kNotifyDelay = 1u << 3,
};

/// MAIL FROM parameters (RFC 1870, 6152, 3030, 6531, 4954, 3461).
struct MailFromParams {
  bool has_size = false;
  uint64_t size = 0;  // SIZE=; saturates at UINT64_MAX when the number overflows
  BodyParam body = BodyParam::kNone;
  bool smtputf8 = false;
  std::string auth;  // AUTH= value as sent (xtext or "<>"); empty when absent
  RetParam ret = RetParam::kNone;
  std::string envid;  // ENVID= xtext as sent; empty when absent

  bool any() const {
    return has_size || body != BodyParam::kNone || smtputf8 || !auth.empty() ||
           ret != RetParam::kNone || !envid.empty();
  }
};

/// RCPT TO parameters (RFC 3461).
struct RcptToParams {
  uint8_t notify = 0;  // NotifyFlag bits; 0 = absent
  std::string orcpt;   // ORCPT= value as sent ("rfc822;xtext"); empty when absent

  bool any() const { return notify != 0 || !orcpt.empty(); }
};

/// One parsed command line. Fields not used by the verb stay empty.
struct Command {
  SmtpVerb verb = SmtpVerb::kUnknown;
  /// EHLO/HELO: the client's name. VRFY/HELP/NOOP: the argument.
  /// AUTH: the mechanism, upper-cased. kUnknown: the verb word (at most 32 bytes).
  std::string arg;
  /// MAIL/RCPT: the path without angle brackets and source route. Empty for
  /// the null reverse-path; RCPT TO:<Postmaster> gives local "Postmaster"
  /// and an empty domain (RFC 5321 4.5.1).
  Mailbox path;
  bool null_path = false;  // MAIL FROM:<>
  MailFromParams mail;
  RcptToParams rcpt;
  uint64_t bdat_size = 0;
  bool bdat_last = false;
  /// AUTH initial response as sent (base64, or "=" for an empty one).
  std::string auth_initial;
  bool has_auth_initial = false;

  void clear();
};

/// A malformed command line and the reply it calls for.
struct CommandError {
  Errc errc = Errc::kSyntax;  // kLimit: line too long; kProtocol: bare LF, CR or NUL
  uint16_t code = 0;          // 500, 501, 553 or 555
  std::string text;           // reply text, starting with the enhanced code
};

/// Parses one command line (without its line end) into *out. On failure
/// fills *err; out->verb still names the verb when it was recognised (the
/// session needs it: a bad BDAT line cannot be resynchronised).
/// Limits: at most kMaxParams MAIL/RCPT parameters (threat: 1,000 params).
[[nodiscard]] bool parse_command_line(std::string_view line, Command* out, CommandError* err);
inline constexpr size_t kMaxParams = 16;

/// Incremental command parser: LineFramer + parse_command_line.
class CommandParser {
 public:
  using Limits = LineFramer::Limits;

  CommandParser() : CommandParser(Limits{}) {}
  explicit CommandParser(Limits limits) : framer_(limits) {}

  /// See parse.h. kDone: command() holds the command. kError: error() holds
  /// the reply for the bad line; `consumed` ends after the line, so the
  /// caller answers and continues. kNeedMore: all consumed.
  ParseResult parse(std::span<const char> in);

  const Command& command() const { return command_; }
  const CommandError& error() const { return error_; }
  void reset() { framer_.reset(); }

 private:
  LineFramer framer_;
  Command command_;
  CommandError error_;
};

// ---------------------------------------------------------------------------
// Session

struct ServerConfig {
  std::string hostname = "localhost";       // greeting, EHLO first line, 221/421 texts
  std::string greeting = "ESMTP ringmail";  // text after the hostname in the 220

  // Extensions. Each switch decides both what EHLO advertises and what is accepted.
  bool pipelining = true;
  bool chunking = true;     // BDAT
  bool binarymime = false;  // BODY=BINARYMIME; only with chunking
  bool eightbitmime = true;
  bool enhanced_status_codes = true;  // off: replies carry no x.y.z codes
  bool smtputf8 = true;
  bool advertise_size = true;  // list SIZE in EHLO (max_message is enforced either way)
  bool dsn = false;            // NOTIFY=, ORCPT=, RET=, ENVID=
  bool starttls = false;       // advertised while TLS is not active; the driver must support it
  uint32_t auth_mechs = 0;     // kAuthPlain | kAuthLogin; other bits are ignored
  /// RFC 4954 4 / RFC 8314: no plaintext passwords without TLS by default.
  bool allow_plaintext_auth = false;
  /// Submission: MAIL needs a successful AUTH first (530 5.7.0).
  bool require_auth = false;

  // Limits.
  /// Message size: advertised as SIZE, 552 5.3.4 above it (MAIL SIZE=, DATA
  /// and BDAT). Threat: a 10 GB message; content beyond it is counted, not
  /// stored. 0 = no limit (bodies are then bounded only by the driver).
  uint64_t max_message = 50ull << 20;
  /// Recipients per transaction; 452 4.5.3 above (RFC 5321 minimum 100).
  /// Threat: Exim CVE-2020-28017 overflowed at ~50M recipients.
  size_t max_recipients = 1000;
  /// Command line cap (500 5.5.2 above). Threat: 10 MB lines.
  size_t max_line = 2048;
  /// AUTH response line cap (RFC 4954 4: at least 12288).
  size_t max_auth_line = 12288;
  /// Error replies before 421 4.7.0 (Postfix smtpd_hard_error_limit); 0 = none.
  /// Threat: junk-command loops, dictionary attacks on RCPT or AUTH.
  uint32_t max_hard_errors = 20;
  /// Command lines per session before 421 4.7.0; 0 = none. Threat: endless NOOP/RSET.
  uint32_t max_commands = 10000;
  /// Reply bytes kept in output() before feed() stops consuming and asks the
  /// driver to flush (Action::kFlush). Threat: a client that pipelines
  /// commands but never reads its replies.
  size_t max_output = 64 * 1024;
  BareLinePolicy bare_line = BareLinePolicy::kReject;  // DATA content, and BDAT unless BINARYMIME
  bool allow_bare_lf_commands = false;                 // accept LF alone as a command line end
  bool forbid_unauth_pipelining = true;
  /// Store message content for the driver (Transaction::body). Off: sizes
  /// are still counted and limits enforced, nothing is buffered (a sink).
  bool keep_body = true;
};

enum class DecisionKind : uint8_t { kNone, kHelo, kMail, kRcpt, kMessage, kStartTls, kAuth };

struct AuthRequest {
  std::string mechanism;  // "PLAIN" or "LOGIN"
  std::string authzid;    // PLAIN only; empty when the client sent none
  std::string user;       // the authentication identity (authcid)
  std::string password;   // wiped when the decision is answered
};

struct Recipient {
  Mailbox mailbox;
  RcptToParams params;
};

struct Transaction {
  Mailbox sender;  // empty for the null reverse-path
  bool null_sender = false;
  MailFromParams params;
  std::vector<Recipient> recipients;  // accepted ones only
  /// Unstuffed DATA content (CRLF line ends, without the final ".") or the
  /// concatenated BDAT chunks; empty when ServerConfig::keep_body is off.
  std::string body;
  uint64_t body_size = 0;  // bytes received, stored or not
  bool bdat = false;       // the body came by BDAT
};

/// What the session asks. Pointers stay valid until the decision is answered.
struct Decision {
  DecisionKind kind = DecisionKind::kNone;
  /// kHelo, kMail, kRcpt, kStartTls: the command being decided (its path,
  /// parameters, EHLO name).
  const Command* command = nullptr;
  /// kRcpt: the transaction so far (sender, accepted recipients).
  /// kMessage: the complete transaction with its body.
  const Transaction* transaction = nullptr;
  const AuthRequest* auth = nullptr;  // kAuth
};

class ServerSession {
 public:
  enum class Action : uint8_t {
    kNeedInput,  // all input consumed: send output(), read more, feed again
    kDecide,     // answer decision() with accept() or respond(); feed consumes nothing until then
    kFlush,      // output() reached max_output: send it, then feed the unconsumed rest
    kStartTls,   // send output() (the 220), then run the TLS handshake, then tls_established()
    kClose,      // send output(), then close the connection
  };
  struct FeedResult {
    size_t consumed;
    Action action;
  };

  explicit ServerSession(ServerConfig config);

  /// Writes the 220 greeting. Call once before the first feed(): bytes fed
  /// before start() are an early talker (554 and close).
  void start();
  /// Writes a 554 greeting instead (RFC 5321 3.1: service refused). The
  /// session then answers 503 to every command but QUIT.
  void start_refused(std::string_view text);

  /// Consumes client bytes (plaintext, or decrypted after TLS). Processes
  /// as many commands as it can and returns how many bytes it used and what
  /// the driver must do next; the driver keeps the unconsumed bytes and
  /// passes them again later. Never fails: protocol errors become replies.
  /// While a decision is pending, or after close, it returns {0, kDecide}
  /// or {0, kClose}. After a STARTTLS was accepted it discards every byte it
  /// is given (counted in plaintext_discarded()) and returns kStartTls.
  FeedResult feed(std::span<const char> in);

  /// Reply bytes to send, in order. consume_output(n) drops the first n.
  std::string_view output() const { return std::string_view(out_).substr(out_pos_); }
  void consume_output(size_t n);

  const Decision& decision() const { return decision_; }
  /// Answers the pending decision with the standard positive reply
  /// (EHLO capability list, 250 2.1.0, 250 2.1.5, 250 2.0.0, 220 2.0.0, 235 2.7.0).
  void accept();
  /// Answers the pending decision. 2xx accepts: for kHelo the text replaces
  /// the EHLO/HELO greeting line, for kMail/kRcpt/kMessage the code and text
  /// are sent as given (e.g. "2.0.0 Ok: queued as 4F2A"), for kStartTls and
  /// kAuth the code is forced to 220/235. 4xx/5xx refuses (the state does not
  /// advance; a refused message ends the transaction); 421 also closes the
  /// session (RFC 5321 3.8). Text lines are split
  /// on '\n'; control bytes become '?'. Precondition: a decision is pending
  /// and code is 2xx, 4xx or 5xx.
  void respond(uint16_t code, std::string_view text);
  /// During kMessage: moves the body out (the transaction keeps an empty one).
  std::string take_body();

  /// Implicit TLS (port 465) or TLS set up by the driver: enables AUTH.
  void set_tls_active(bool active) { tls_active_ = active; }
  /// The STARTTLS handshake succeeded: reset to the post-greeting state
  /// (RFC 3207 4.2). Precondition: feed() returned kStartTls.
  void tls_established();
  /// Ends the session from the driver's side (timeouts, shutdown), e.g.
  /// close_with(421, "4.4.2 Error: timeout exceeded"). Any pending decision
  /// is dropped; further feed() calls return kClose.
  void close_with(uint16_t code, std::string_view text);

  /// What the session waits for from the client, for the driver's
  /// deadlines (the session reads no clock).
  enum class Awaiting : uint8_t {
    kNothing,  // not started, a decision pending, STARTTLS accepted, or closed
    kLine,     // a command line, or an AUTH response line
    kContent,  // DATA content or BDAT chunk bytes (of a refused chunk too)
  };
  Awaiting awaiting() const;
  /// kLine: bytes of an unfinished line are held (or an overlong one is
  /// being skipped).
  bool partial_line() const { return awaiting() == Awaiting::kLine && framer_.has_partial(); }
  /// A MAIL command was accepted and its transaction has not ended.
  bool in_transaction() const { return tx_active_; }
  /// A BDAT transfer is under way: a chunk of this transaction was
  /// accepted and the LAST one has not been answered.
  bool chunking() const { return bdat_started_; }
  /// DATA and BDAT content bytes read in this session (as sent, stored or
  /// not); only grows.
  uint64_t content_bytes() const { return content_bytes_; }

  bool closed() const { return phase_ == Phase::kClosed; }
  std::string_view close_reason() const { return close_reason_; }
  bool tls_active() const { return tls_active_; }
  bool authenticated() const { return authenticated_; }
  std::string_view auth_user() const { return auth_user_; }
  std::string_view helo_name() const { return helo_name_; }
  bool ehlo() const { return ehlo_; }
  /// Plaintext bytes dropped after an accepted STARTTLS (> 0: injection attempt).
  uint64_t plaintext_discarded() const { return plaintext_discarded_; }
  uint32_t hard_errors() const { return hard_errors_; }
  uint32_t commands() const { return commands_; }
  uint32_t auth_failures() const { return auth_failures_; }
  uint64_t messages_accepted() const { return messages_accepted_; }

 private:
  enum class Phase : uint8_t {
    kNotStarted,
    kCommand,
    kAuthResponse,  // waiting for a SASL response line
    kData,
    kBdat,        // reading chunk bytes
    kTlsPending,  // STARTTLS accepted; discard plaintext
    kClosed,
  };
  enum class AuthStep : uint8_t { kPlain, kLoginUser, kLoginPassword };

  size_t read_command(std::span<const char> in, bool* need_input);
  size_t read_auth_line(std::span<const char> in, bool* need_input);
  size_t read_data(std::span<const char> in, bool* need_input);
  size_t read_bdat(std::span<const char> in, bool* need_input);
  bool count_command();
  bool violates_pipelining(const Command& cmd, bool pending_input) const;
  bool pipelining_in_effect() const { return config_.pipelining && ehlo_; }
  void dispatch(bool pending_input);
  void on_helo();
  void on_mail();
  bool mail_params_refused();
  void on_rcpt();
  void on_data();
  void on_bdat(bool pending_input);
  void finish_chunk(bool pending_input);
  void finish_message(bool pending_input);
  void on_starttls();
  void on_auth();
  void auth_continue(std::string_view line);
  void finish_plain(std::string_view decoded);
  void end_auth();
  void wipe_auth_request();
  void ask(DecisionKind kind);
  void accept_helo(std::string_view text);
  void write_ehlo_reply(std::string_view first_line);
  void finish_decision(uint16_t code, std::string_view text, bool use_default);
  void reply(uint16_t code, std::string_view text);
  void write_lines(uint16_t code, std::string_view text);
  void protocol_violation(const char* reason);
  void close_session(uint16_t code, std::string_view text, const char* reason);
  void reset_transaction();
  void scan_bdat_bytes(std::string_view bytes);
  bool auth_offered() const;
  uint64_t message_limit() const;

  ServerConfig config_;
  Phase phase_ = Phase::kNotStarted;
  LineFramer framer_;
  Command cmd_;
  DataReader data_;
  Transaction tx_;
  AuthRequest auth_;
  Decision decision_;
  std::string out_;
  size_t out_pos_ = 0;
  std::string helo_name_;
  std::string auth_user_;
  const char* close_reason_ = "";

  uint64_t bdat_remaining_ = 0;
  uint64_t plaintext_discarded_ = 0;
  uint64_t messages_accepted_ = 0;
  uint64_t content_bytes_ = 0;
  uint32_t hard_errors_ = 0;
  uint32_t commands_ = 0;
  uint32_t auth_failures_ = 0;
  uint16_t bdat_refusal_code_ = 0;  // nonzero: the current chunk is consumed and refused
  const char* bdat_refusal_text_ = "";
  AuthStep auth_step_ = AuthStep::kPlain;
  bool refused_ = false;  // 554 greeting: 503 to everything but QUIT
  bool helo_seen_ = false;
  bool ehlo_ = false;
  bool tls_active_ = false;
  bool authenticated_ = false;
  bool tx_active_ = false;     // MAIL accepted
  bool bdat_started_ = false;  // a BDAT chunk of this transaction was accepted
  bool bdat_failed_ = false;   // a chunk of this transaction failed; refuse the rest
  bool bdat_last_ = false;
  bool bdat_prev_cr_ = false;  // bare CR/LF scan across BDAT chunks
  bool bdat_bare_seen_ = false;
};

}  // namespace ringmail::proto
