// ServerSession (see smtp_server.h for the protocol contract).
#include "proto/smtp_server.h"

#include <algorithm>

#include "proto/smtp_command.h"
#include "proto/smtp_reply.h"

namespace ringmail::proto {

namespace {

constexpr size_t kKeepBodyCapacity = 1u << 20;  // reuse a body buffer up to this size
constexpr std::string_view kSyncError = "5.5.0 Error: SMTP protocol synchronization";

DataReader::Limits data_limits(const ServerConfig& c) {
  DataReader::Limits l;
  l.max_message = c.max_message == 0 ? UINT64_MAX : c.max_message;
  l.bare_line = c.bare_line;
  return l;
}

}  // namespace

ServerSession::ServerSession(ServerConfig config)
    : config_(std::move(config)),
      framer_(LineFramer::Limits{config_.max_line, config_.allow_bare_lf_commands}),
      data_(data_limits(config_)) {}

// ---------------------------------------------------------------------------
// Output

void ServerSession::consume_output(size_t n) {
  RM_ASSERT(n <= out_.size() - out_pos_);
  out_pos_ += n;
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  }
}

// Writes one reply; `text` may start with an enhanced code, which is
// dropped when ENHANCEDSTATUSCODES is off. Lines split on '\n'.
void ServerSession::write_lines(uint16_t code, std::string_view text) {
  std::string c = std::to_string(code);
  size_t start = 0;
  do {
    size_t nl = text.find('\n', start);
    std::string_view line = text.substr(start, nl == std::string_view::npos ? nl : nl - start);
    size_t skip = 0;
    if (!config_.enhanced_status_codes && parse_enhanced_code(line, &skip).present()) {
      line.remove_prefix(skip);
    }
    out_.append(c);
    out_.push_back(nl == std::string_view::npos ? ' ' : '-');
    for (char ch : line) {
      unsigned char u = static_cast<unsigned char>(ch);
      out_.push_back(u < 0x20 || u == 0x7f ? '?' : ch);
    }
    out_.append("\r\n");
    start = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
  } while (start <= text.size());
}

// A reply to the client. Error replies count against max_hard_errors.
void ServerSession::reply(uint16_t code, std::string_view text) {
  write_lines(code, text);
  if (code >= 400 && code != 421) {
    ++hard_errors_;
    if (config_.max_hard_errors != 0 && hard_errors_ >= config_.max_hard_errors) {
      close_session(421, "4.7.0 " + config_.hostname + " Error: too many errors",
                    "too many errors");
    }
  }
}

void ServerSession::close_session(uint16_t code, std::string_view text, const char* reason) {
  write_lines(code, text);
  phase_ = Phase::kClosed;
  close_reason_ = reason;
  decision_ = Decision{};
  wipe_auth_request();
}

void ServerSession::close_with(uint16_t code, std::string_view text) {
  if (phase_ != Phase::kClosed) {
    close_session(code, text, "closed by driver");
  }
}

void ServerSession::protocol_violation(const char* reason) {
  close_session(554, kSyncError, reason);
}

// ---------------------------------------------------------------------------
// Greeting and feed loop

void ServerSession::start() {
  RM_ASSERT(phase_ == Phase::kNotStarted);
  write_lines(220, config_.hostname + " " + config_.greeting);
  phase_ = Phase::kCommand;
}

void ServerSession::start_refused(std::string_view text) {
  RM_ASSERT(phase_ == Phase::kNotStarted);
  write_lines(554, text);
  refused_ = true;
  phase_ = Phase::kCommand;
}

ServerSession::FeedResult ServerSession::feed(std::span<const char> in) {
  if (phase_ == Phase::kClosed) {
    return FeedResult{0, Action::kClose};
  }
  if (decision_.kind != DecisionKind::kNone) {
    return FeedResult{0, Action::kDecide};
  }
  if (phase_ == Phase::kNotStarted) {
    if (in.empty()) {
      return FeedResult{0, Action::kNeedInput};
    }
    protocol_violation("early talker");  // bytes before the greeting
    return FeedResult{in.size(), Action::kClose};
  }
  size_t pos = 0;
  while (true) {
    if (phase_ == Phase::kTlsPending) {
      // CVE-2011-0411: whatever was pipelined after STARTTLS is plaintext
      // injected before the handshake; it must never be executed.
      plaintext_discarded_ += in.size() - pos;
      return FeedResult{in.size(), Action::kStartTls};
    }
    if (phase_ == Phase::kClosed) {
      return FeedResult{pos, Action::kClose};
    }
    if (decision_.kind != DecisionKind::kNone) {
      return FeedResult{pos, Action::kDecide};
    }
    if (out_.size() - out_pos_ >= config_.max_output && pos < in.size()) {
      return FeedResult{pos, Action::kFlush};
    }
    std::span<const char> rest = in.subspan(pos);
    bool need_input = false;
    switch (phase_) {
      case Phase::kCommand:
        pos += read_command(rest, &need_input);
        break;
      case Phase::kAuthResponse:
        pos += read_auth_line(rest, &need_input);
        break;
      case Phase::kData:
        pos += read_data(rest, &need_input);
        break;
      case Phase::kBdat:
        pos += read_bdat(rest, &need_input);
        break;
      default:
        RM_PANIC("unexpected session phase");
    }
    if (need_input) {
      return FeedResult{pos, Action::kNeedInput};
    }
  }
}

ServerSession::Awaiting ServerSession::awaiting() const {
  if (decision_.kind != DecisionKind::kNone) {
    return Awaiting::kNothing;
  }
  switch (phase_) {
    case Phase::kCommand:
    case Phase::kAuthResponse:
      return Awaiting::kLine;
    case Phase::kData:
    case Phase::kBdat:
      return Awaiting::kContent;
    case Phase::kNotStarted:
    case Phase::kTlsPending:
    case Phase::kClosed:
      break;
  }
  return Awaiting::kNothing;
}

bool ServerSession::count_command() {
  ++commands_;
  if (config_.max_commands != 0 && commands_ > config_.max_commands) {
    close_session(421, "4.7.0 " + config_.hostname + " Error: too many commands",
                  "too many commands");
    return false;
  }
  return true;
}

// RFC 2920 3.1 and RFC 4954 4: which commands may be followed by more input
// before their reply.
bool ServerSession::violates_pipelining(const Command& cmd, bool pending_input) const {
  if (!config_.forbid_unauth_pipelining || !pending_input) {
    return false;
  }
  switch (cmd.verb) {
    case SmtpVerb::kQuit:      // closing anyway
    case SmtpVerb::kStartTls:  // the rest is discarded if TLS starts
    case SmtpVerb::kBdat:      // the rest is chunk data
      return false;
    case SmtpVerb::kEhlo:
    case SmtpVerb::kHelo:
    case SmtpVerb::kData:
    case SmtpVerb::kNoop:
    case SmtpVerb::kVrfy:
    case SmtpVerb::kHelp:
      return true;
    case SmtpVerb::kAuth:
      return !(cmd.arg == "PLAIN" && cmd.has_auth_initial && pipelining_in_effect());
    default:
      return !pipelining_in_effect();
  }
}

size_t ServerSession::read_command(std::span<const char> in, bool* need_input) {
  if (in.empty()) {
    *need_input = true;
    return 0;
  }
  ParseResult r = framer_.feed(in);
  if (r.status == ParseStatus::kNeedMore) {
    *need_input = true;
    return r.consumed;
  }
  bool pending_input = r.consumed < in.size();
  if (!count_command()) {
    return r.consumed;
  }
  if (r.status == ParseStatus::kError) {
    bool too_long = framer_.error().code == Errc::kLimit;
    reply(500, too_long ? "5.5.2 Error: line too long" : "5.5.2 Error: bare <LF> received");
    return r.consumed;
  }
  CommandError err;
  bool parsed = parse_command_line(framer_.line(), &cmd_, &err);
  if (violates_pipelining(cmd_, pending_input)) {
    protocol_violation("unauthorized pipelining");
    return r.consumed;
  }
  if (refused_) {
    if (cmd_.verb == SmtpVerb::kQuit) {
      close_session(221, "2.0.0 Bye", "quit");
    } else {
      reply(503, "5.5.1 Error: no valid service");
    }
    return r.consumed;
  }
  if (!parsed) {
    if (cmd_.verb == SmtpVerb::kBdat) {
      // The chunk size is unknown: the stream cannot be resynchronised.
      close_session(501, err.text, "bad BDAT");
    } else {
      reply(err.code, err.text);
    }
    return r.consumed;
  }
  dispatch(pending_input);
  return r.consumed;
}

void ServerSession::dispatch(bool pending_input) {
  switch (cmd_.verb) {
    case SmtpVerb::kEhlo:
    case SmtpVerb::kHelo:
      on_helo();
      return;
    case SmtpVerb::kMail:
      on_mail();
      return;
    case SmtpVerb::kRcpt:
      on_rcpt();
      return;
    case SmtpVerb::kData:
      on_data();
      return;
    case SmtpVerb::kBdat:
      on_bdat(pending_input);
      return;
    case SmtpVerb::kRset:
      reset_transaction();
      reply(250, "2.0.0 Ok");
      return;
    case SmtpVerb::kNoop:
      reply(250, "2.0.0 Ok");
      return;
    case SmtpVerb::kQuit:
      close_session(221, "2.0.0 Bye", "quit");
      return;
    case SmtpVerb::kVrfy:
      reply(252, "2.0.0 Send some mail, I'll try my best");
      return;
    case SmtpVerb::kHelp:
      reply(214, "2.0.0 See RFC 5321");
      return;
    case SmtpVerb::kStartTls:
      on_starttls();
      return;
    case SmtpVerb::kAuth:
      on_auth();
      return;
    case SmtpVerb::kUnknown:
      reply(500, "5.5.2 Error: command not recognized");
      return;
  }
}

// ---------------------------------------------------------------------------
// Commands

void ServerSession::ask(DecisionKind kind) {
  decision_ = Decision{};
  decision_.kind = kind;
  switch (kind) {
    case DecisionKind::kHelo:
    case DecisionKind::kMail:
    case DecisionKind::kStartTls:
      decision_.command = &cmd_;
      break;
    case DecisionKind::kRcpt:
      decision_.command = &cmd_;
      decision_.transaction = &tx_;
      break;
    case DecisionKind::kMessage:
      decision_.transaction = &tx_;
      break;
    case DecisionKind::kAuth:
      decision_.auth = &auth_;
      break;
    case DecisionKind::kNone:
      break;
  }
}

void ServerSession::on_helo() {
  ask(DecisionKind::kHelo);
}

uint64_t ServerSession::message_limit() const {
  return config_.max_message == 0 ? UINT64_MAX : config_.max_message;
}

// Parameters the session did not advertise are refused with 555.
bool ServerSession::mail_params_refused() {
  const MailFromParams& p = cmd_.mail;
  const char* refusal = nullptr;
  if (!ehlo_ && p.any()) {
    refusal = "5.5.4 Error: parameters need EHLO";
  } else if (p.smtputf8 && !config_.smtputf8) {
    refusal = "5.5.4 Error: SMTPUTF8 not supported";
  } else if (p.body == BodyParam::k8BitMime && !config_.eightbitmime) {
    refusal = "5.5.4 Error: 8BITMIME not supported";
  } else if (p.body == BodyParam::kBinaryMime && !(config_.binarymime && config_.chunking)) {
    refusal = "5.5.4 Error: BINARYMIME not supported";
  } else if ((p.ret != RetParam::kNone || !p.envid.empty()) && !config_.dsn) {
    refusal = "5.5.4 Error: DSN not supported";
  } else if (!p.auth.empty() && !auth_offered()) {
    refusal = "5.5.4 Error: AUTH not supported";
  }
  if (refusal != nullptr) {
    reply(555, refusal);
    return true;
  }
  return false;
}

void ServerSession::on_mail() {
  if (!helo_seen_) {
    reply(503, "5.5.1 Error: send HELO/EHLO first");
  } else if (tx_active_) {
    reply(503, "5.5.1 Error: nested MAIL command");
  } else if (config_.require_auth && !authenticated_) {
    reply(530, "5.7.0 Authentication required");
  } else if (mail_params_refused()) {
    return;
  } else if (cmd_.path.utf8 && !cmd_.mail.smtputf8) {
    reply(553, "5.6.7 Error: SMTPUTF8 required for this address");
  } else if (cmd_.mail.has_size && cmd_.mail.size > message_limit()) {
    reply(552, "5.3.4 Error: message size exceeds fixed limit");
  } else {
    ask(DecisionKind::kMail);
  }
}

void ServerSession::on_rcpt() {
  if (!tx_active_) {
    reply(503, "5.5.1 Error: need MAIL command");
  } else if (bdat_started_) {
    reply(503, "5.5.1 Error: RCPT during BDAT transfer");
  } else if (cmd_.rcpt.any() && !config_.dsn) {
    reply(555, "5.5.4 Error: DSN not supported");
  } else if (cmd_.path.utf8 && !tx_.params.smtputf8) {
    reply(553, "5.6.7 Error: SMTPUTF8 required for this address");
  } else if (tx_.recipients.size() >= config_.max_recipients) {
    // Not a hard error: a pipelining client learns the limit this way
    // and sends the rest in the next transaction (RFC 5321 4.5.3.1.10).
    write_lines(452, "4.5.3 Error: too many recipients");
  } else {
    ask(DecisionKind::kRcpt);
  }
}

void ServerSession::on_data() {
  if (!tx_active_) {
    reply(503, "5.5.1 Error: need MAIL command");
  } else if (bdat_started_ || bdat_failed_) {
    reply(503, "5.5.1 Error: DATA during BDAT transfer");
  } else if (tx_.params.body == BodyParam::kBinaryMime) {
    reply(503, "5.5.1 Error: BINARYMIME requires BDAT");
  } else if (tx_.recipients.empty()) {
    reply(554, "5.5.1 Error: no valid recipients");
  } else {
    data_.reset();
    tx_.body.clear();
    tx_.body_size = 0;
    phase_ = Phase::kData;
    write_lines(354, "End data with <CR><LF>.<CR><LF>");
  }
}

size_t ServerSession::read_data(std::span<const char> in, bool* need_input) {
  ParseResult r = data_.feed(in, config_.keep_body ? &tx_.body : nullptr);
  tx_.body_size = data_.size();
  content_bytes_ += r.consumed;
  if (r.status != ParseStatus::kDone) {
    *need_input = true;
    return r.consumed;
  }
  phase_ = Phase::kCommand;
  finish_message(r.consumed < in.size());
  return r.consumed;
}

void ServerSession::finish_message(bool pending_input) {
  if (config_.forbid_unauth_pipelining && pending_input && !pipelining_in_effect()) {
    protocol_violation("unauthorized pipelining after end of data");
  } else if (tx_.body_size > message_limit()) {
    reset_transaction();
    reply(552, "5.3.4 Error: message too big");
  } else if (data_.bare_line_seen() && config_.bare_line == BareLinePolicy::kReject) {
    reset_transaction();
    reply(550, "5.6.0 Error: bare CR or LF in message");
  } else {
    ask(DecisionKind::kMessage);
  }
}

void ServerSession::on_bdat(bool pending_input) {
  bdat_refusal_code_ = 0;
  if (!config_.chunking) {
    bdat_refusal_code_ = 502;
    bdat_refusal_text_ = "5.5.1 Error: BDAT not supported";
  } else if (!tx_active_) {
    bdat_refusal_code_ = 503;
    bdat_refusal_text_ = "5.5.1 Error: need MAIL command";
  } else if (tx_.recipients.empty()) {
    bdat_refusal_code_ = 554;
    bdat_refusal_text_ = "5.5.1 Error: no valid recipients";
  } else if (bdat_failed_) {
    bdat_refusal_code_ = 554;
    bdat_refusal_text_ = "5.5.0 Error: transaction failed; send RSET";
  } else if (!bdat_started_) {
    bdat_started_ = true;
    tx_.bdat = true;
    tx_.body.clear();
    tx_.body_size = 0;
  }
  bdat_remaining_ = cmd_.bdat_size;
  bdat_last_ = cmd_.bdat_last;
  phase_ = Phase::kBdat;
  if (bdat_remaining_ == 0) {
    finish_chunk(pending_input);
  }
}

void ServerSession::scan_bdat_bytes(std::string_view bytes) {
  for (char c : bytes) {
    if ((c == '\n' && !bdat_prev_cr_) || (bdat_prev_cr_ && c != '\n')) {
      bdat_bare_seen_ = true;
    }
    bdat_prev_cr_ = c == '\r';
  }
}

size_t ServerSession::read_bdat(std::span<const char> in, bool* need_input) {
  size_t n = static_cast<size_t>(std::min<uint64_t>(bdat_remaining_, in.size()));
  std::string_view chunk(in.data(), n);
  content_bytes_ += n;
  if (bdat_refusal_code_ == 0) {
    uint64_t before = tx_.body_size;
    tx_.body_size += n;
    if (config_.keep_body && before < message_limit()) {
      uint64_t room = message_limit() - before;
      tx_.body.append(chunk.substr(0, static_cast<size_t>(std::min<uint64_t>(room, n))));
    }
    if (config_.bare_line == BareLinePolicy::kReject && tx_.params.body != BodyParam::kBinaryMime) {
      scan_bdat_bytes(chunk);
    }
  }
  bdat_remaining_ -= n;
  if (bdat_remaining_ != 0) {
    *need_input = true;
    return n;
  }
  finish_chunk(n < in.size());
  return n;
}

void ServerSession::finish_chunk(bool pending_input) {
  phase_ = Phase::kCommand;
  if (config_.forbid_unauth_pipelining && pending_input && !pipelining_in_effect()) {
    protocol_violation("unauthorized pipelining after BDAT");
    return;
  }
  if (bdat_refusal_code_ != 0) {
    if (bdat_last_ && tx_active_) {
      reset_transaction();
    }
    reply(bdat_refusal_code_, bdat_refusal_text_);
    return;
  }
  if (bdat_last_ && bdat_prev_cr_) {
    bdat_bare_seen_ = true;  // the message ends in a bare CR
  }
  const char* failure = nullptr;
  uint16_t code = 0;
  if (tx_.body_size > message_limit()) {
    code = 552;
    failure = "5.3.4 Error: message too big";
  } else if (bdat_bare_seen_) {
    code = 550;
    failure = "5.6.0 Error: bare CR or LF in message";
  }
  if (failure != nullptr) {
    bdat_failed_ = true;
    if (bdat_last_) {
      reset_transaction();
    }
    reply(code, failure);
  } else if (!bdat_last_) {
    write_lines(250, "2.0.0 " + std::to_string(cmd_.bdat_size) + " octets received");
  } else {
    ask(DecisionKind::kMessage);
  }
}

void ServerSession::on_starttls() {
  if (tls_active_) {
    reply(554, "5.5.1 Error: TLS already active");
  } else if (!config_.starttls) {
    reply(502, "5.5.1 Error: command not implemented");
  } else if (!ehlo_) {
    reply(503, "5.5.1 Error: send EHLO first");
  } else if (tx_active_) {
    reply(503, "5.5.1 Error: MAIL transaction in progress");
  } else {
    ask(DecisionKind::kStartTls);
  }
}

void ServerSession::tls_established() {
  RM_ASSERT(phase_ == Phase::kTlsPending);
  tls_active_ = true;
  // RFC 3207 4.2: forget everything learnt before TLS; keep the counters.
  helo_seen_ = false;
  ehlo_ = false;
  helo_name_.clear();
  authenticated_ = false;
  auth_user_.clear();
  reset_transaction();
  framer_.reset();
  phase_ = Phase::kCommand;
}

void ServerSession::reset_transaction() {
  tx_active_ = false;
  tx_.sender = Mailbox{};
  tx_.null_sender = false;
  tx_.params = MailFromParams{};
  tx_.recipients.clear();
  tx_.body.clear();
  if (tx_.body.capacity() > kKeepBodyCapacity) {
    tx_.body.shrink_to_fit();
  }
  tx_.body_size = 0;
  tx_.bdat = false;
  bdat_started_ = false;
  bdat_failed_ = false;
  bdat_prev_cr_ = false;
  bdat_bare_seen_ = false;
}

std::string ServerSession::take_body() {
  RM_ASSERT(decision_.kind == DecisionKind::kMessage);
  return std::move(tx_.body);
}

// ---------------------------------------------------------------------------
// Decisions

void ServerSession::accept() {
  RM_ASSERT(decision_.kind != DecisionKind::kNone);
  finish_decision(decision_.kind == DecisionKind::kStartTls ? 220 : 250, {}, true);
}

void ServerSession::respond(uint16_t code, std::string_view text) {
  RM_ASSERT(decision_.kind != DecisionKind::kNone);
  RM_ASSERT((code >= 200 && code < 300) || (code >= 400 && code < 600));
  finish_decision(code, text, false);
}

void ServerSession::write_ehlo_reply(std::string_view first_line) {
  std::vector<std::string> lines;
  lines.emplace_back(first_line);
  if (config_.pipelining) {
    lines.emplace_back("PIPELINING");
  }
  if (config_.advertise_size) {
    lines.emplace_back(config_.max_message == 0 ? std::string("SIZE")
                                                : "SIZE " + std::to_string(config_.max_message));
  }
  if (config_.eightbitmime) {
    lines.emplace_back("8BITMIME");
  }
  if (config_.chunking) {
    lines.emplace_back("CHUNKING");
    if (config_.binarymime) {
      lines.emplace_back("BINARYMIME");
    }
  }
  if (config_.smtputf8) {
    lines.emplace_back("SMTPUTF8");
  }
  if (config_.dsn) {
    lines.emplace_back("DSN");
  }
  if (config_.starttls && !tls_active_) {
    lines.emplace_back("STARTTLS");
  }
  if (auth_offered() && (tls_active_ || config_.allow_plaintext_auth)) {
    std::string auth = "AUTH";
    auth.append((config_.auth_mechs & kAuthPlain) != 0 ? " PLAIN" : "");
    auth.append((config_.auth_mechs & kAuthLogin) != 0 ? " LOGIN" : "");
    lines.push_back(std::move(auth));
  }
  if (config_.enhanced_status_codes) {
    lines.emplace_back("ENHANCEDSTATUSCODES");
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    out_.append(i + 1 < lines.size() ? "250-" : "250 ");
    out_.append(lines[i]);
    out_.append("\r\n");
  }
}

void ServerSession::accept_helo(std::string_view text) {
  helo_seen_ = true;
  ehlo_ = cmd_.verb == SmtpVerb::kEhlo;
  helo_name_ = cmd_.arg;
  reset_transaction();
  std::string first = text.empty() ? config_.hostname : std::string(text);
  for (char& c : first) {
    unsigned char u = static_cast<unsigned char>(c);
    c = (u < 0x20 || u == 0x7f) ? '?' : c;
  }
  if (ehlo_) {
    write_ehlo_reply(first);
  } else {
    write_lines(250, first);
  }
}

// Applies the driver's answer. `use_default`: accept() with the standard text.
void ServerSession::finish_decision(uint16_t code, std::string_view text, bool use_default) {
  DecisionKind kind = decision_.kind;
  if (code == 421) {  // RFC 5321 3.8: the service is closing the channel
    close_session(421, text, "closed by driver");
    return;
  }
  decision_ = Decision{};
  bool positive = code < 300;
  switch (kind) {
    case DecisionKind::kHelo:
      if (positive) {
        accept_helo(text);
        return;
      }
      break;
    case DecisionKind::kMail:
      if (positive) {
        tx_active_ = true;
        tx_.sender = std::move(cmd_.path);
        tx_.null_sender = cmd_.null_path;
        tx_.params = std::move(cmd_.mail);
        write_lines(code, use_default ? "2.1.0 Ok" : text);
        return;
      }
      break;
    case DecisionKind::kRcpt:
      if (positive) {
        tx_.recipients.push_back(Recipient{std::move(cmd_.path), std::move(cmd_.rcpt)});
        write_lines(code, use_default ? "2.1.5 Ok" : text);
        return;
      }
      break;
    case DecisionKind::kMessage:
      reset_transaction();
      if (positive) {
        ++messages_accepted_;
        hard_errors_ = 0;
        write_lines(code, use_default ? "2.0.0 Ok" : text);
        return;
      }
      break;
    case DecisionKind::kStartTls:
      if (positive) {
        write_lines(220, use_default ? "2.0.0 Ready to start TLS" : text);
        phase_ = Phase::kTlsPending;
        return;
      }
      break;
    case DecisionKind::kAuth:
      if (positive) {
        authenticated_ = true;
        auth_user_ = auth_.user;
      } else {
        ++auth_failures_;
      }
      wipe_auth_request();
      if (positive) {
        write_lines(235, use_default ? "2.7.0 Authentication successful" : text);
        return;
      }
      break;
    case DecisionKind::kNone:
      RM_PANIC("no decision pending");
  }
  reply(code, text);
}

}  // namespace ringmail::proto
