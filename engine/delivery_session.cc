#include "engine/delivery_session.h"

#include "proto/smtp_command.h"

namespace ringmail::engine {
namespace {

bool has_non_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string_view disposition_name(Disposition d) {
  switch (d) {
    case Disposition::kDelivered:
      return "delivered";
    case Disposition::kDeferred:
      return "deferred";
    case Disposition::kBounced:
      return "bounced";
  }
  return "?";
}

std::string_view stage_name(Stage s) {
  switch (s) {
    case Stage::kConnect:
      return "connect";
    case Stage::kGreeting:
      return "greeting";
    case Stage::kEhlo:
      return "ehlo";
    case Stage::kHelo:
      return "helo";
    case Stage::kMail:
      return "mail";
    case Stage::kRcpt:
      return "rcpt";
    case Stage::kData:
      return "data";
    case Stage::kBody:
      return "body";
    case Stage::kRset:
      return "rset";
    case Stage::kQuit:
      return "quit";
    case Stage::kLocal:
      return "local";
    case Stage::kDns:
      return "dns";
    case Stage::kTls:
      return "tls";
    case Stage::kAuth:
      return "auth";
  }
  return "?";
}

Disposition classify_reply(const proto::Reply& r, Stage stage) {
  if (r.is_positive()) {
    return stage == Stage::kBody ? Disposition::kDelivered : Disposition::kDeferred;
  }
  if (!r.is_permanent()) {
    return Disposition::kDeferred;
  }
  switch (stage) {
    case Stage::kConnect:
    case Stage::kGreeting:
    case Stage::kEhlo:
    case Stage::kHelo:
    case Stage::kRset:
    case Stage::kQuit:
    case Stage::kTls:
    case Stage::kAuth:
      // A server that refuses to talk is a destination problem, never a
      // verdict on the recipients.
      return Disposition::kDeferred;
    case Stage::kRcpt:
      if (r.code == 552) {
        return Disposition::kDeferred;  // RFC 5321 4.5.3.1.10: treat as 452
      }
      [[fallthrough]];
    case Stage::kMail:
    case Stage::kData:
      // 503 means the server saw commands out of sequence: a desync, not a
      // verdict on this mail. Bouncing on it would lose mail to our own or
      // the server's confusion.
      return r.code == 503 ? Disposition::kDeferred : Disposition::kBounced;
    case Stage::kBody:
    case Stage::kLocal:
    case Stage::kDns:
      return Disposition::kBounced;
  }
  return Disposition::kDeferred;
}

DeliverySession::DeliverySession(Options options, SessionObserver* observer)
    : options_(std::move(options)), observer_(observer), parser_(options_.reply_limits) {}

void DeliverySession::on_connected() {
  RM_ASSERT(phase_ == Phase::kConnecting);
  tls_active_ = options_.implicit_tls;
  phase_ = Phase::kGreeting;
  expect(ExpectKind::kGreeting);
}

void DeliverySession::expect(ExpectKind kind, uint64_t seq, uint32_t rcpt) {
  if (expects_.empty()) {
    ++wait_gen_;
  }
  expects_.push_back(Expect{kind, rcpt, seq});
}

DeliverySession::Wait DeliverySession::wait() const {
  if (expects_.empty()) {
    return Wait::kNone;
  }
  switch (expects_.front().kind) {
    case ExpectKind::kGreeting:
      return Wait::kGreeting;
    case ExpectKind::kEhlo:
    case ExpectKind::kHelo:
      return Wait::kEhlo;
    case ExpectKind::kMail:
      return Wait::kMail;
    case ExpectKind::kRcpt:
      return Wait::kRcpt;
    case ExpectKind::kData:
      return Wait::kDataInit;
    case ExpectKind::kBody:
      return Wait::kDataDone;
    case ExpectKind::kRset:
      return Wait::kRset;
    case ExpectKind::kQuit:
      return Wait::kQuit;
    case ExpectKind::kStartTls:
      return Wait::kStartTls;
    case ExpectKind::kAuth:
      return Wait::kAuth;
  }
  return Wait::kNone;
}

void DeliverySession::on_output_flushed() {
  for (auto& t : txns_) {
    if (t.body_sent) {
      t.body_on_wire = true;
    }
  }
}

bool DeliverySession::can_accept_txn() const {
  if (phase_ != Phase::kReady || quit_requested_) {
    return false;
  }
  if (txns_started_ + txns_.size() >= options_.max_txns) {
    return false;
  }
  bool pipelined = options_.pipelining && caps_.pipelining;
  size_t window = pipelined ? options_.max_pipelined_txns : 1;
  return txns_.size() < window;
}

bool DeliverySession::idle() const {
  return phase_ == Phase::kReady && txns_.empty() && expects_.empty();
}

void DeliverySession::add_txn(SessionTxn txn) {
  RM_ASSERT(phase_ == Phase::kReady);
  Txn t;
  t.seq = next_seq_++;
  t.rcpts.assign(txn.rcpts.size(), RcptState::kPending);
  t.undecided = static_cast<uint32_t>(txn.rcpts.size());
  t.t = std::move(txn);
  t.use_bdat = options_.chunking && caps_.chunking;
  txns_.push_back(std::move(t));
  pump();
}

void DeliverySession::quit() {
  quit_requested_ = true;
  if (idle()) {
    send_quit();
  } else if (phase_ == Phase::kConnecting) {
    phase_ = Phase::kDone;
  }
}

void DeliverySession::send_quit() {
  proto::append_quit(out_.cmd());
  out_.commit();
  expect(ExpectKind::kQuit);
  phase_ = Phase::kQuitting;
}

void DeliverySession::on_data(std::span<const char> bytes) {
  // Nothing is read during the handshake: those bytes belong to TLS.
  while (!bytes.empty() && phase_ != Phase::kDone && phase_ != Phase::kTlsHandshake) {
    proto::ParseResult r = parser_.parse(bytes);
    bytes = bytes.subspan(r.consumed);
    if (r.status == proto::ParseStatus::kNeedMore) {
      break;
    }
    if (r.status == proto::ParseStatus::kError) {
      protocol_error("malformed reply: " + parser_.error().message);
      return;
    }
    proto::Reply reply = parser_.take_reply();
    surplus_ = !bytes.empty();
    handle_reply(reply);
  }
}

DeliverySession::Txn* DeliverySession::find_txn(uint64_t seq) {
  for (auto& t : txns_) {
    if (t.seq == seq) {
      return &t;
    }
  }
  return nullptr;
}

void DeliverySession::handle_reply(const proto::Reply& r) {
  if (expects_.empty()) {
    protocol_error("unexpected reply: " + r.summary());
    return;
  }
  Expect e = expects_.front();
  expects_.pop_front();
  if (!expects_.empty()) {
    ++wait_gen_;
  }
  if (r.code == 421) {
    server_closing_ = true;
  }
  Txn* t = e.txn_seq != 0 ? find_txn(e.txn_seq) : nullptr;
  switch (e.kind) {
    case ExpectKind::kGreeting:
      on_greeting(r);
      break;
    case ExpectKind::kEhlo:
      on_ehlo(r, false);
      break;
    case ExpectKind::kHelo:
      on_ehlo(r, true);
      break;
    case ExpectKind::kMail:
      RM_ASSERT(t != nullptr);
      on_mail(*t, r);
      break;
    case ExpectKind::kRcpt:
      RM_ASSERT(t != nullptr);
      on_rcpt(*t, e.rcpt, r);
      break;
    case ExpectKind::kData:
      RM_ASSERT(t != nullptr);
      on_data_reply(*t, r);
      break;
    case ExpectKind::kBody:
      RM_ASSERT(t != nullptr);
      on_body_reply(*t, r);
      break;
    case ExpectKind::kRset:
      if (r.is_intermediate()) {
        protocol_error("unexpected reply to RSET: " + r.summary());
        return;
      }
      break;
    case ExpectKind::kQuit:
      phase_ = Phase::kDone;
      return;
    case ExpectKind::kStartTls:
      on_starttls_reply(r);
      break;
    case ExpectKind::kAuth:
      on_auth_reply(r);
      break;
  }
  if (phase_ == Phase::kDone) {
    return;
  }
  finish_done_txns();
  if (server_closing_) {
    // 421: the server is closing the channel (RFC 5321 3.8). Everything not
    // yet decided is deferred with its words.
    fail(r, phase_ != Phase::kReady);
    return;
  }
  pump();
  if (quit_requested_ && idle()) {
    send_quit();
  }
}

void DeliverySession::on_greeting(const proto::Reply& r) {
  if (!r.is_positive()) {
    fail(r, true);
    return;
  }
  auto ok = proto::append_ehlo(out_.cmd(), options_.ehlo_name);
  RM_ASSERT(ok.ok());  // the name was validated with the configuration
  out_.commit();
  phase_ = Phase::kEhlo;
  expect(ExpectKind::kEhlo);
}

void DeliverySession::on_ehlo(const proto::Reply& r, bool helo) {
  if (r.is_positive()) {
    caps_ = helo ? proto::Capabilities{} : proto::parse_ehlo_capabilities(r);
    if (!tls_active_ && options_.tls != TlsPolicy::kNone) {
      if (caps_.starttls) {
        proto::append_starttls(out_.cmd());
        out_.commit();
        phase_ = Phase::kStartTls;
        expect(ExpectKind::kStartTls);
        return;
      }
      if (tls_mandatory()) {
        refuse(Stage::kTls, proto::make_reply(451,
                                              "4.7.4 TLS is required for this destination, but the "
                                              "server does not offer STARTTLS"));
        return;
      }
    }
    begin_session();
    return;
  }
  if (!helo && r.is_permanent()) {
    // RFC 5321 3.2: a server that does not know EHLO answers 5xx; fall back
    // to HELO and no extensions.
    auto ok = proto::append_helo(out_.cmd(), options_.ehlo_name);
    RM_ASSERT(ok.ok());
    out_.commit();
    phase_ = Phase::kHelo;
    expect(ExpectKind::kHelo);
    return;
  }
  fail(r, true);
}

void DeliverySession::on_mail(Txn& t, const proto::Reply& r) {
  --t.outstanding;
  if (r.is_positive()) {
    return;
  }
  if (r.is_intermediate()) {
    protocol_error("unexpected reply to MAIL: " + r.summary());
    return;
  }
  t.mail_failed = true;
  decide_all(t, classify_reply(r, Stage::kMail), Stage::kMail, r, false);
  if (t.step == Step::kRcpt && !(options_.pipelining && caps_.pipelining)) {
    t.step = Step::kFinished;  // nothing else of it was sent
  }
}

void DeliverySession::on_rcpt(Txn& t, uint32_t i, const proto::Reply& r) {
  --t.outstanding;
  ++t.replies_rcpt;
  if (!t.mail_failed && t.rcpts[i] == RcptState::kPending) {
    if (r.is_positive()) {
      t.rcpts[i] = RcptState::kAccepted;
      ++t.accepted;
    } else if (r.is_intermediate()) {
      protocol_error("unexpected reply to RCPT: " + r.summary());
      return;
    } else {
      decide(t, i, classify_reply(r, Stage::kRcpt), Stage::kRcpt, r);
    }
  }
}

void DeliverySession::on_data_reply(Txn& t, const proto::Reply& r) {
  --t.outstanding;
  if (r.code == 354) {
    send_body(t);
    return;
  }
  if (r.is_positive() || r.is_intermediate()) {
    protocol_error("unexpected reply to DATA: " + r.summary());
    return;
  }
  t.step = Step::kFinished;
  if (!t.mail_failed) {
    decide_all(t, classify_reply(r, Stage::kData), Stage::kData, r, true);
    need_rset_ = true;  // the server may still hold MAIL and RCPT state
  }
}

void DeliverySession::on_body_reply(Txn& t, const proto::Reply& r) {
  --t.outstanding;
  if (r.is_intermediate()) {
    protocol_error("unexpected reply to end of data: " + r.summary());
    return;
  }
  t.step = Step::kFinished;
  if (!t.mail_failed) {
    decide_all(t, classify_reply(r, Stage::kBody), Stage::kBody, r, true);
    if (t.use_bdat && !r.is_positive()) {
      need_rset_ = true;  // RFC 3030 leaves the state after a failed BDAT open
    }
  }
}

void DeliverySession::decide(Txn& t, uint32_t i, Disposition d, Stage s, const proto::Reply& r,
                             bool unknown) {
  if (t.rcpts[i] == RcptState::kDone) {
    return;
  }
  t.rcpts[i] = RcptState::kDone;
  --t.undecided;
  Outcome o;
  o.disposition = d;
  o.stage = s;
  o.unknown = unknown;
  o.reply = &r;
  observer_->on_rcpt_outcome(t.t, i, o);
}

void DeliverySession::decide_all(Txn& t, Disposition d, Stage s, const proto::Reply& r,
                                 bool accepted_only) {
  for (uint32_t i = 0; i < t.rcpts.size(); ++i) {
    if (t.rcpts[i] == RcptState::kAccepted ||
        (!accepted_only && t.rcpts[i] == RcptState::kPending)) {
      decide(t, i, d, s, r);
    }
  }
}

void DeliverySession::finish_done_txns() {
  while (!txns_.empty() && txns_.front().step == Step::kFinished &&
         txns_.front().outstanding == 0) {
    Txn& t = txns_.front();
    RM_ASSERT(t.undecided == 0);
    observer_->on_txn_done(t.t);
    txns_.pop_front();
  }
}

bool DeliverySession::local_checks(Txn& t) {
  const Message& m = *t.t.msg;
  const uint64_t size = m.wire_size(t.t.vars);
  if (caps_.size_advertised && caps_.size_limit != 0 && size > caps_.size_limit) {
    proto::Reply r = proto::make_reply(
        552, "5.3.4 message size " + std::to_string(size) + " exceeds the limit of " +
                 std::to_string(caps_.size_limit) + " bytes announced by the server");
    decide_all(t, Disposition::kBounced, Stage::kLocal, r, false);
  } else if (!caps_.smtputf8) {
    proto::Reply r = proto::make_reply(
        553, "5.6.7 the server does not support SMTPUTF8, which this address needs");
    if (m.sender_utf8()) {
      decide_all(t, Disposition::kBounced, Stage::kLocal, r, false);
    } else {
      for (uint32_t i = 0; i < t.rcpts.size(); ++i) {
        if (has_non_ascii(t.t.rcpts[i])) {
          decide(t, i, Disposition::kBounced, Stage::kLocal, r);
        }
      }
    }
  }
  if (t.undecided == 0) {
    t.step = Step::kFinished;
    return false;
  }
  return true;
}

void DeliverySession::pump() {
  if (phase_ != Phase::kReady) {
    return;
  }
  const bool pipelined = options_.pipelining && caps_.pipelining;
  for (auto& t : txns_) {
    if (!pipelined && !expects_.empty()) {
      return;  // one command at a time without PIPELINING
    }
    switch (t.step) {
      case Step::kFinished:
      case Step::kAwaitFinal:
        continue;  // later transactions may go ahead
      case Step::kWait354:
        return;  // DATA is a sync point: nothing may follow it yet
      case Step::kMail:
        if (!start_txn(t)) {
          continue;
        }
        if (!pipelined) {
          return;
        }
        [[fallthrough]];
      case Step::kRcpt:
      case Step::kData:
        break;
    }
    // Send RCPTs, then DATA or BDAT.
    while (t.step == Step::kRcpt && t.next_rcpt < t.rcpts.size()) {
      uint32_t i = t.next_rcpt++;
      if (t.rcpts[i] != RcptState::kPending) {
        continue;  // decided locally
      }
      auto ok = proto::append_rcpt_to(out_.cmd(), t.t.rcpts[i]);
      RM_ASSERT(ok.ok());  // validated at ingest
      out_.commit();
      ++t.outstanding;
      expect(ExpectKind::kRcpt, t.seq, i);
      if (!pipelined) {
        return;
      }
    }
    if (t.step == Step::kRcpt) {
      t.step = Step::kData;
    }
    if (t.step == Step::kFinished) {
      continue;
    }
    if (!pipelined) {
      if (!expects_.empty()) {
        return;
      }
      if (t.mail_failed) {
        t.step = Step::kFinished;
        continue;
      }
      if (t.accepted == 0) {
        need_rset_ = true;  // MAIL was accepted: close the transaction
        t.step = Step::kFinished;
        continue;
      }
    }
    if (t.use_bdat) {
      proto::append_bdat(out_.cmd(), t.t.msg->wire_size(t.t.vars), true);
      out_.commit();
      t.t.msg->append_wire(out_, /*stuffed=*/false, t.t.msg, t.t.vars);
      t.body_sent = true;
      t.step = Step::kAwaitFinal;
      ++t.outstanding;
      expect(ExpectKind::kBody, t.seq);
      if (!pipelined) {
        return;
      }
      continue;
    }
    proto::append_data(out_.cmd());
    out_.commit();
    ++t.outstanding;
    expect(ExpectKind::kData, t.seq);
    t.step = Step::kWait354;
    return;
  }
  finish_done_txns();
}

bool DeliverySession::start_txn(Txn& t) {
  if (!local_checks(t)) {
    return false;
  }
  bool previous_open = false;
  for (auto& other : txns_) {
    if (&other == &t) {
      break;
    }
    if (other.step != Step::kFinished && other.use_bdat) {
      previous_open = true;  // its BDAT verdict is unknown yet: it may leave state behind
    }
  }
  if (need_rset_ || previous_open) {
    proto::append_rset(out_.cmd());
    out_.commit();
    expect(ExpectKind::kRset);
    need_rset_ = false;
    if (!(options_.pipelining && caps_.pipelining)) {
      return false;  // MAIL follows once RSET is answered
    }
  }
  const Message& m = *t.t.msg;
  proto::MailParams p;
  if (caps_.size_advertised) {
    p.size = m.wire_size(t.t.vars);
  }
  if (m.eight_bit() && caps_.eightbitmime) {
    p.body = proto::BodyType::k8BitMime;
  }
  if (caps_.smtputf8) {
    bool utf8 = m.sender_utf8();
    for (size_t i = 0; i < t.t.rcpts.size() && !utf8; ++i) {
      utf8 = has_non_ascii(t.t.rcpts[i]);
    }
    p.smtputf8 = utf8;
  }
  auto ok = proto::append_mail_from(out_.cmd(), m.sender(), p);
  RM_ASSERT(ok.ok());  // validated at ingest
  out_.commit();
  ++txns_started_;
  ++t.outstanding;
  expect(ExpectKind::kMail, t.seq);
  t.step = Step::kRcpt;
  t.next_rcpt = 0;
  return true;
}

void DeliverySession::send_body(Txn& t) {
  if (!t.mail_failed && t.accepted > 0) {
    t.t.msg->append_wire(out_, /*stuffed=*/true, t.t.msg, t.t.vars);
  }
  // With no accepted recipient (a server that says 354 anyway) an empty
  // message ends the DATA phase; nobody's outcome depends on it.
  out_.add_static(".\r\n");
  t.body_sent = true;
  t.step = Step::kAwaitFinal;
  ++t.outstanding;
  expect(ExpectKind::kBody, t.seq);
}

void DeliverySession::fail(const proto::Reply& reply, bool before_ready) {
  last_error_ = reply;
  if (before_ready) {
    failed_before_ready_ = true;
    if (failure_stage_ == Stage::kConnect) {
      if (phase_ == Phase::kStartTls || phase_ == Phase::kTlsHandshake) {
        failure_stage_ = Stage::kTls;
      } else if (phase_ == Phase::kAuth) {
        failure_stage_ = Stage::kAuth;
      }
    }
  }
  // Whatever ended the session, the undecided recipients are deferred: a
  // broken session is never a verdict on them.
  const Disposition d = Disposition::kDeferred;
  for (auto& t : txns_) {
    // Not started (MAIL not sent) and nothing decided locally: hand it back
    // untouched. One with local verdicts (e.g. a recipient bounced for
    // SMTPUTF8 before an RSET it waited for) is finished here instead, so
    // no recipient is reported twice.
    if (t.step == Step::kMail && t.undecided == t.rcpts.size()) {
      observer_->on_txn_returned(std::move(t.t));
      continue;
    }
    Stage s = t.step == Step::kRcpt || t.step == Step::kData ? Stage::kRcpt
              : t.step == Step::kWait354                     ? Stage::kData
              : t.step == Step::kAwaitFinal                  ? Stage::kBody
                                                             : Stage::kMail;
    for (uint32_t i = 0; i < t.rcpts.size(); ++i) {
      bool unknown = t.body_on_wire && t.rcpts[i] == RcptState::kAccepted;
      decide(t, i, d, s, reply, unknown);
    }
    observer_->on_txn_done(t.t);
  }
  txns_.clear();
  expects_.clear();
  out_.clear();
  phase_ = Phase::kDone;
}

void DeliverySession::protocol_error(std::string_view what) {
  fail(proto::make_reply(451, "4.5.0 protocol error: " + std::string(what)),
       phase_ != Phase::kReady);
}

void DeliverySession::on_timeout() {
  if (phase_ == Phase::kDone) {
    return;
  }
  if (phase_ == Phase::kQuitting) {
    phase_ = Phase::kDone;
    return;
  }
  std::string what;
  switch (wait()) {
    case Wait::kGreeting:
      what = "the greeting";
      break;
    case Wait::kEhlo:
      what = "the reply to EHLO/HELO";
      break;
    case Wait::kMail:
      what = "the reply to MAIL FROM";
      break;
    case Wait::kRcpt:
      what = "the reply to RCPT TO";
      break;
    case Wait::kDataInit:
      what = "the reply to DATA";
      break;
    case Wait::kDataDone:
      what = "the reply to end of data";
      break;
    case Wait::kStartTls:
      what = "the reply to STARTTLS";
      break;
    case Wait::kAuth:
      what = "the reply to AUTH";
      break;
    default:
      what = "the server";
      break;
  }
  fail(proto::make_reply(451, "4.4.2 timeout waiting for " + what), phase_ != Phase::kReady);
}

void DeliverySession::on_closed(std::string_view what) {
  if (phase_ == Phase::kQuitting || phase_ == Phase::kDone) {
    phase_ = Phase::kDone;
    return;
  }
  fail(proto::make_reply(451, "4.4.2 connection lost: " + std::string(what)),
       phase_ != Phase::kReady);
}

void DeliverySession::on_connect_failed(std::string_view what) {
  fail(proto::make_reply(451, "4.4.1 " + std::string(what)), true);
}

}  // namespace ringmail::engine
