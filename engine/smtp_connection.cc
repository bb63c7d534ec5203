#include "engine/smtp_connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/log.h"
#include "engine/scheduler.h"
#include "engine/shard.h"

namespace ringmail::engine {
namespace {}  // namespace

void SmtpConnection::Op::complete(int res, uint32_t flags) {
  SmtpConnection* c = conn;
  // ops_ still counts this operation while its handler runs, so a handler
  // that tears the connection down cannot free it under our feet; the
  // maybe_finish() below is the one that may delete it.
  if (c->state_ == State::kConnecting || c->state_ == State::kOpen) {
    (c->*fn)(res, flags);
  } else if (this == &c->recv_op_) {
    c->recv_armed_ = false;
  } else if (this == &c->send_op_) {
    c->sending_ = false;
  } else if (this == &c->connect_op_) {
    c->connect_pending_ = false;
  }
  --c->ops_;
  c->maybe_finish();
}

SmtpConnection::SmtpConnection(Shard& shard, Scheduler& scheduler, Destination* dest,
                               uint32_t source)
    : shard_(shard),
      scheduler_(scheduler),
      dest_(dest),
      source_(source),
      reply_timer_(&SmtpConnection::on_reply_timer, this),
      send_timer_(&SmtpConnection::on_send_timer, this),
      idle_timer_(&SmtpConnection::on_idle_timer, this),
      connect_timer_(&SmtpConnection::on_connect_timer, this),
      tls_timer_(&SmtpConnection::on_tls_timer, this) {
  connect_op_ = {};
  connect_op_.conn = this;
  connect_op_.fn = &SmtpConnection::on_connect;
  recv_op_.conn = this;
  recv_op_.fn = &SmtpConnection::on_recv;
  send_op_.conn = this;
  send_op_.fn = &SmtpConnection::on_send;
  cancel_op_.conn = this;
  cancel_op_.fn = &SmtpConnection::on_cancel;
  close_op_.conn = this;
  close_op_.fn = &SmtpConnection::on_close;
}

SmtpConnection::~SmtpConnection() {
  RM_ASSERT(ops_ == 0 && fd_ < 0);
}

void SmtpConnection::new_session() {
  const DeliveryConfig& dc = shard_.config().delivery;
  const SourceConfig& src = shard_.config().egress.sources[dest_->sources[source_].source];
  DeliverySession::Options o;
  o.ehlo_name = src.ehlo_name;
  o.pipelining = dc.pipelining;
  o.chunking = dc.chunking;
  o.max_pipelined_txns = dc.max_pipelined_txns;
  o.max_txns = dest_->shaping.max_msgs_per_conn;
  o.tls = dest_->shaping.tls;
  o.implicit_tls = dest_->shaping.implicit_tls;
  o.auth_user = dest_->shaping.auth_user;
  o.auth_password = dest_->shaping.auth_password;
  o.auth_plaintext = dest_->shaping.auth_plaintext;
  session_.emplace(std::move(o), this);
  seen_wait_gen_ = 0;
}

void SmtpConnection::start() {
  if (dest_->resolution && dest_->resolution->kind == RouteResolution::Kind::kOk) {
    candidates_ = dest_->resolution->candidates;
    rotate_equal_preference(candidates_, dest_->connects++);
  }
  new_session();
  connect_next();
}

// Precondition: no socket, no outstanding operation.
void SmtpConnection::connect_next() {
  state_ = State::kConnecting;
  tls_summary_.clear();
  tls_session_saved_ = false;
  wire_.clear();  // no operation is outstanding here
  wire_sent_ = 0;
  plaintext_only_ = retry_plain_;
  if (retry_plain_) {
    retry_plain_ = false;
    --next_host_;  // the same address again, without STARTTLS
  }
  if (next_host_ >= candidates_.size()) {
    in_session_call_ = true;
    session_->on_connect_failed(last_connect_error_.empty() ? "no host to connect to"
                                                            : last_connect_error_);
    in_session_call_ = false;
    after_session();
    return;
  }
  const Candidate& ep = candidates_[next_host_++];
  peer_ = format_sockaddr(ep.addr);
  mx_ = ep.mx;
  if (dest_->shaping.tls == TlsPolicy::kOpportunistic && !dest_->shaping.implicit_tls &&
      (plaintext_only_ ||
       shard_.tls_client().plaintext_only(fallback_key(), shard_.clock().now()))) {
    session_->set_tls_policy(TlsPolicy::kNone);
  }
  fd_ = ::socket(ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd_ < 0) {
    last_connect_error_ = "socket(): " + std::string(std::strerror(errno));
    connect_next();
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // The egress source's address for this family, if it has one. A source
  // bound to one family never sends from an arbitrary address of the other.
  const SourceConfig& src = shard_.config().egress.sources[dest_->sources[source_].source];
  bool v6 = ep.addr.ss_family == AF_INET6;
  bool has = v6 ? src.has_v6 : src.has_v4;
  bool has_other = v6 ? src.has_v4 : src.has_v6;
  if (!has && has_other) {
    last_connect_error_ =
        "source " + src.name + " has no " + (v6 ? "IPv6" : "IPv4") + " address for " + peer_;
    ::close(fd_);
    fd_ = -1;
    connect_next();
    return;
  }
  if (has) {
    // Many connections from one address: let connect() pick the port.
    ::setsockopt(fd_, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const sockaddr_storage& b = v6 ? src.bind_v6 : src.bind_v4;
    socklen_t blen = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&b), blen) != 0) {
      last_connect_error_ =
          "bind to source " + src.name + " (" + src.describe_bind() + "): " + std::strerror(errno);
      ::close(fd_);
      fd_ = -1;
      connect_next();
      return;
    }
  }
  ++ops_;
  connect_pending_ = true;
  shard_.ring().connect(fd_, reinterpret_cast<const sockaddr*>(&ep.addr), ep.addr_len,
                        &connect_op_);
  shard_.timers().schedule(&connect_timer_,
                           shard_.clock().now() + shard_.config().delivery.timeouts.connect);
}

void SmtpConnection::on_connect(int res, uint32_t /*flags*/) {
  connect_pending_ = false;
  connect_timer_.cancel();
  if (res < 0) {
    last_connect_error_ =
        "connect to " + peer_ + ": " +
        (res == -ECANCELED ? std::string("timed out") : std::string(std::strerror(-res)));
    ::close(fd_);
    fd_ = -1;
    if (ops_ == 0) {
      connect_next();
    } else {
      state_ = State::kResetting;  // a timer's cancel is still in flight
    }
    return;
  }
  state_ = State::kOpen;
  if (dest_->shaping.implicit_tls) {
    arm_recv();
    start_tls();  // the session hears of the connection once TLS is up
    after_session();
    return;
  }
  in_session_call_ = true;
  session_->on_connected();
  in_session_call_ = false;
  arm_recv();
  after_session();
}

void SmtpConnection::on_connect_timer(void* self) {
  auto* c = static_cast<SmtpConnection*>(self);
  if (!c->connect_pending_) {
    return;
  }
  // Cancelling the connect completes it with -ECANCELED, handled above as a
  // timeout.
  ++c->ops_;
  c->shard_.ring().cancel(&c->connect_op_, &c->cancel_op_);
}

void SmtpConnection::arm_recv() {
  if (recv_armed_ || fd_ < 0 || state_ != State::kOpen) {
    return;
  }
  recv_armed_ = true;
  ++ops_;
  shard_.ring().recv(fd_, rbuf_, kRecvBuf, &recv_op_);
}

void SmtpConnection::on_recv(int res, uint32_t /*flags*/) {
  recv_armed_ = false;
  if (res > 0 && tls_ != nullptr) {
    tls_->feed(std::span<const char>(rbuf_, static_cast<size_t>(res)));
    if (tls_handshaking_) {
      continue_handshake();
    } else {
      read_plaintext();
    }
  } else if (res > 0) {
    in_session_call_ = true;
    session_->on_data(std::span<const char>(rbuf_, static_cast<size_t>(res)));
    in_session_call_ = false;
    if (session_->phase() == DeliverySession::Phase::kTlsHandshake) {
      start_tls();
    }
  } else if (tls_handshaking_) {
    tls_failed(res == 0 ? "the server closed the connection during the handshake"
                        : std::string("during the handshake: ") + std::strerror(-res));
  } else {
    in_session_call_ = true;
    session_->on_closed(res == 0 ? "closed by the server" : std::strerror(-res));
    in_session_call_ = false;
  }
  if (res > 0) {
    arm_recv();
  }
  after_session();
}

// ---------------------------------------------------------------------------
// TLS

std::string SmtpConnection::session_key() const {
  // Verified and unverified sessions never mix: resuming skips the
  // certificate check, so a session is only reused under the policy that
  // made it.
  return dest_->domain + "|" + mx_ + (dest_->shaping.tls == TlsPolicy::kVerify ? "|v" : "|-");
}

std::string SmtpConnection::fallback_key() const {
  return mx_ + "|" + peer_;
}

void SmtpConnection::start_tls() {
  TlsClient& tc = shard_.tls_client();
  auto ctx = tc.context();
  if (!ctx.ok()) {
    tls_failed(ctx.error().message);
    return;
  }
  TlsChannel::ClientParams p;
  p.server_name = mx_;
  p.verify = dest_->shaping.tls == TlsPolicy::kVerify;
  if (tc.resumption()) {
    p.resume = tc.find_session(session_key());
  }
  auto ch = TlsChannel::client(**ctx, p);
  if (!ch.ok()) {
    tls_failed(ch.error().message);
    return;
  }
  tls_ = std::move(*ch);
  tls_handshaking_ = true;
  shard_.timers().schedule(&tls_timer_, shard_.clock().now() + tc.handshake_timeout());
  continue_handshake();
}

void SmtpConnection::continue_handshake() {
  TlsChannel::Status st = tls_->handshake();
  if (st == TlsChannel::Status::kWant) {
    flush();
    return;
  }
  if (st != TlsChannel::Status::kDone) {
    std::string why = tls_->error();
    shard_.tls_client().drop_session(session_key());
    tls_failed(why);
    return;
  }
  tls_handshaking_ = false;
  tls_timer_.cancel();
  shard_.stats().tls_client_ok.fetch_add(1, std::memory_order_relaxed);
  tls_summary_ = tls_->summary();
  RM_LOG_DEBUG("TLS with %s (%s): %s%s", mx_.c_str(), peer_.c_str(), tls_summary_.c_str(),
               tls_->resumed() ? " (resumed)" : "");
  in_session_call_ = true;
  if (session_->phase() == DeliverySession::Phase::kConnecting) {
    session_->on_connected();  // implicit TLS
  } else {
    session_->on_tls_established();
  }
  in_session_call_ = false;
  read_plaintext();  // records that came with the server's last handshake flight
  flush();
}

void SmtpConnection::tls_failed(const std::string& what) {
  shard_.stats().tls_client_failed.fetch_add(1, std::memory_order_relaxed);
  tls_handshaking_ = false;
  tls_timer_.cancel();
  in_session_call_ = true;
  session_->on_tls_failed("with " + mx_ + " (" + peer_ + "): " + what);
  in_session_call_ = false;
}

void SmtpConnection::read_plaintext() {
  // The receive buffer doubles as the plaintext buffer: its bytes were
  // copied into the channel, and the next receive is armed only after this.
  RM_ASSERT(!recv_armed_);
  while (tls_ != nullptr && !tls_handshaking_ && !session_->done()) {
    size_t n = 0;
    TlsChannel::Status st = tls_->read(std::span<char>(rbuf_, kRecvBuf), &n);
    if (st == TlsChannel::Status::kWant) {
      return;
    }
    in_session_call_ = true;
    if (st == TlsChannel::Status::kDone) {
      save_tls_session();
      session_->on_data(std::span<const char>(rbuf_, n));
    } else {
      session_->on_closed(st == TlsChannel::Status::kClosed ? "closed by the server (TLS)"
                                                            : tls_->error());
    }
    in_session_call_ = false;
    if (st != TlsChannel::Status::kDone) {
      return;
    }
  }
}

void SmtpConnection::save_tls_session() {
  // After the first application data: a TLS 1.3 server sends its session
  // ticket right after the handshake, so by now it has been processed.
  if (tls_session_saved_) {
    return;
  }
  tls_session_saved_ = true;
  TlsClient& tc = shard_.tls_client();
  if (tc.resumption() && !tls_->resumed()) {
    tc.store_session(session_key(), tls_->session());
  }
}

bool SmtpConnection::encrypt_pending() {
  size_t budget = TlsChannel::kMaxWriteBatch;
  while (budget > 0) {
    if (inflight_.done()) {
      if (session_->out().empty()) {
        break;
      }
      session_->out().take(&inflight_);
    }
    size_t taken = 0;
    for (const iovec& v : inflight_.iov()) {
      size_t n = std::min(budget, v.iov_len);
      auto st = tls_->write(std::span<const char>(static_cast<const char*>(v.iov_base), n));
      if (st != TlsChannel::Status::kDone) {
        tls_error_ = tls_->error();
        shard_.timers().schedule(&tls_timer_, shard_.clock().now());
        return false;
      }
      taken += n;
      budget -= n;
      if (n < v.iov_len || budget == 0) {
        break;
      }
    }
    inflight_.advance(taken);
  }
  return true;
}

void SmtpConnection::flush_tls() {
  if (wire_sent_ == wire_.size()) {
    wire_.clear();
    wire_sent_ = 0;
    if (!tls_handshaking_ && tls_error_.empty() && !encrypt_pending()) {
      all_sent();
      return;
    }
    tls_->take_output(&wire_);
    if (wire_.empty()) {
      all_sent();
      return;
    }
  }
  send_is_wire_ = true;
  sending_ = true;
  ++ops_;
  shard_.ring().send(fd_, wire_.data() + wire_sent_, wire_.size() - wire_sent_, MSG_NOSIGNAL,
                     &send_op_);
  shard_.timers().schedule(&send_timer_,
                           shard_.clock().now() + shard_.config().delivery.timeouts.data_block);
}

void SmtpConnection::on_tls_timer(void* self) {
  auto* c = static_cast<SmtpConnection*>(self);
  if (c->state_ != State::kOpen) {
    return;
  }
  if (!c->tls_error_.empty()) {
    std::string why = std::move(c->tls_error_);
    c->tls_error_.clear();
    c->in_session_call_ = true;
    c->session_->on_closed(why);
    c->in_session_call_ = false;
  } else if (c->tls_handshaking_) {
    c->tls_failed("handshake not completed within " +
                  std::to_string(c->shard_.tls_client().handshake_timeout().count()) +
                  "ms (tls.handshake_timeout)");
  }
  c->after_session();
}

void SmtpConnection::flush() {
  if (sending_ || fd_ < 0 || state_ != State::kOpen) {
    return;
  }
  if (tls_ != nullptr) {
    flush_tls();
    return;
  }
  if (inflight_.done()) {
    if (session_->out().empty()) {
      all_sent();
      return;
    }
    session_->out().take(&inflight_);
  }
  const auto& iov = inflight_.iov();
  msghdr& msg = send_msg_;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = const_cast<iovec*>(iov.data());
  msg.msg_iovlen = iov.size();
  send_is_wire_ = false;
  sending_ = true;
  ++ops_;
  shard_.ring().sendmsg(fd_, &msg, MSG_NOSIGNAL, &send_op_);
  shard_.timers().schedule(&send_timer_,
                           shard_.clock().now() + shard_.config().delivery.timeouts.data_block);
}

void SmtpConnection::on_send(int res, uint32_t /*flags*/) {
  sending_ = false;
  if (res < 0) {
    in_session_call_ = true;
    session_->on_closed(std::string("send: ") + std::strerror(-res));
    in_session_call_ = false;
    after_session();
    return;
  }
  if (send_is_wire_) {
    wire_sent_ += static_cast<size_t>(res);
  } else {
    inflight_.advance(static_cast<size_t>(res));
  }
  after_session();
}

void SmtpConnection::on_send_timer(void* self) {
  auto* c = static_cast<SmtpConnection*>(self);
  c->in_session_call_ = true;
  c->session_->on_closed("no progress sending for " +
                         std::to_string(c->shard_.config().delivery.timeouts.data_block.count()) +
                         "ms");
  c->in_session_call_ = false;
  c->after_session();
}

Millis SmtpConnection::timeout_for(DeliverySession::Wait w) const {
  const SmtpTimeouts& t = shard_.config().delivery.timeouts;
  switch (w) {
    case DeliverySession::Wait::kGreeting:
      return t.greeting;
    case DeliverySession::Wait::kEhlo:
    case DeliverySession::Wait::kStartTls:
    case DeliverySession::Wait::kAuth:
      return t.ehlo;
    case DeliverySession::Wait::kMail:
      return t.mail;
    case DeliverySession::Wait::kRcpt:
      return t.rcpt;
    case DeliverySession::Wait::kDataInit:
      return t.data_init;
    case DeliverySession::Wait::kDataDone:
      return t.data_done;
    case DeliverySession::Wait::kRset:
      return t.rset;
    case DeliverySession::Wait::kQuit:
      return t.quit;
    case DeliverySession::Wait::kNone:
      break;
  }
  return t.idle;
}

void SmtpConnection::on_reply_timer(void* self) {
  auto* c = static_cast<SmtpConnection*>(self);
  c->in_session_call_ = true;
  c->session_->on_timeout();
  c->in_session_call_ = false;
  c->after_session();
}

void SmtpConnection::after_session() {
  if (in_session_call_ || (state_ != State::kOpen && state_ != State::kConnecting)) {
    return;
  }
  DeliverySession& s = *session_;
  if (s.done()) {
    if (s.plaintext_retry_wanted() && !plaintext_only_ && s.txns_started() == 0) {
      // Opportunistic TLS failed: the same address again in plaintext
      // (RFC 7435), remembered so the next connections skip STARTTLS.
      RM_LOG_INFO("%s; retrying %s without TLS",
                  s.last_error() ? s.last_error()->summary().c_str() : "TLS failed", peer_.c_str());
      shard_.tls_client().remember_plaintext(fallback_key(), shard_.clock().now());
      retry_plain_ = true;
      state_ = State::kResetting;
      close_socket();
      maybe_finish();
      return;
    }
    if (s.failure_stage() == Stage::kAuth && s.last_error()) {
      // R26: a refused login is a configuration problem; say so loudly.
      RM_LOG_WARN("AUTH as %s to %s (%s) failed: %s", dest_->shaping.auth_user.c_str(), mx_.c_str(),
                  peer_.c_str(), s.last_error()->summary().c_str());
    }
    if (!working_ && s.failed_before_ready() && next_host_ < candidates_.size() &&
        s.txns_started() == 0) {
      // The greeting or EHLO was refused: RFC 5321 5.1 says try the next
      // host. Nothing was assigned to this session yet.
      last_connect_error_ = s.last_error() ? s.last_error()->summary() : "session failed";
      state_ = State::kResetting;
      close_socket();
      maybe_finish();
      return;
    }
    // A session that failed before it carried a single transaction (a
    // desynchronised server, a reset right after EHLO) says as much about
    // the destination as one that failed before it was ready: the
    // scheduler must back off, not reconnect at once. (A parked idle
    // connection the server closes is not a failure.)
    failed_before_ready_ = (s.failed_before_ready() && !working_) ||
                           (s.last_error() && s.txns_started() == 0 && !parked_);
    failure_ = s.last_error();
    failure_stage_ = s.failure_stage();
    begin_teardown();
    return;
  }
  flush();
  if (s.wait() == DeliverySession::Wait::kNone) {
    reply_timer_.cancel();
    reply_timer_deferred_ = false;
  } else if (s.wait_generation() != seen_wait_gen_) {
    seen_wait_gen_ = s.wait_generation();
    arm_reply_timer();
  }
  if (s.phase() == DeliverySession::Phase::kReady) {
    if (!working_) {
      working_ = true;
      ++dest_->sources[source_].working;
      scheduler_.connection_ready(this);
    }
    if (!parked_ && (s.can_accept_txn() || s.idle())) {
      scheduler_.feed(this);
    }
  }
}

void SmtpConnection::add_txn(SessionTxn txn) {
  unpark();
  in_session_call_ = true;
  session_->add_txn(std::move(txn));
  in_session_call_ = false;
  // after_session() would call back into feed(); the scheduler is already
  // feeding, so only move bytes and timers here.
  flush();
  DeliverySession& s = *session_;
  if (s.wait() != DeliverySession::Wait::kNone && s.wait_generation() != seen_wait_gen_) {
    seen_wait_gen_ = s.wait_generation();
    arm_reply_timer();
  }
}

void SmtpConnection::arm_reply_timer() {
  // A reply deadline runs from the moment the request is on the wire (RFC
  // 5321 4.5.3.2: e.g. the end-of-data timer starts after the final dot).
  // While bytes are still going out, the send timer (data_block) watches
  // progress; the reply timer starts when the last byte is sent.
  if (sending_) {
    reply_timer_.cancel();
    reply_timer_deferred_ = true;
    return;
  }
  reply_timer_deferred_ = false;
  shard_.timers().schedule(&reply_timer_, shard_.clock().now() + timeout_for(session_->wait()));
}

void SmtpConnection::all_sent() {
  send_timer_.cancel();
  if (session_) {
    session_->on_output_flushed();
  }
  if (reply_timer_deferred_) {
    reply_timer_deferred_ = false;
    if (session_ && session_->wait() != DeliverySession::Wait::kNone) {
      shard_.timers().schedule(&reply_timer_, shard_.clock().now() + timeout_for(session_->wait()));
    }
  }
}

void SmtpConnection::park() {
  parked_ = true;
  shard_.timers().schedule(&idle_timer_,
                           shard_.clock().now() + shard_.config().delivery.timeouts.idle);
}

void SmtpConnection::unpark() {
  parked_ = false;
  idle_timer_.cancel();
}

void SmtpConnection::on_idle_timer(void* self) {
  auto* c = static_cast<SmtpConnection*>(self);
  c->scheduler_.connection_expired(c);
  c->parked_ = false;
  c->quit();
}

void SmtpConnection::quit() {
  if (state_ != State::kOpen && state_ != State::kConnecting) {
    return;
  }
  in_session_call_ = true;
  session_->quit();
  in_session_call_ = false;
  after_session();
}

void SmtpConnection::abort(std::string_view why) {
  if (state_ != State::kOpen && state_ != State::kConnecting) {
    return;
  }
  in_session_call_ = true;
  session_->on_closed(why);
  in_session_call_ = false;
  after_session();
}

void SmtpConnection::close_socket() {
  reply_timer_.cancel();
  send_timer_.cancel();
  connect_timer_.cancel();
  tls_timer_.cancel();
  tls_.reset();
  tls_handshaking_ = false;
  tls_error_.clear();  // wire_ may still be read by a send being cancelled: kept until reuse
  if (fd_ >= 0) {
    if (recv_armed_) {
      ++ops_;
      shard_.ring().cancel(&recv_op_, &cancel_op_);
    }
    if (sending_) {
      ++ops_;
      shard_.ring().cancel(&send_op_, &cancel_op_);
    }
    if (connect_pending_) {
      ++ops_;
      shard_.ring().cancel(&connect_op_, &cancel_op_);
    }
    // The kernel takes its own file reference for an operation only when it
    // is submitted: submit first, so an operation queued for this socket in
    // this loop iteration cannot land on a new socket that reuses the
    // number (c-ares' next UDP socket, another SMTP connection). After
    // that, closing is safe; their CQEs still arrive (cancelled).
    shard_.ring().submit();
    ::close(fd_);
    fd_ = -1;
  }
  inflight_ = SendBatch();
  sending_ = false;
}

void SmtpConnection::begin_teardown() {
  state_ = State::kTearingDown;
  idle_timer_.cancel();
  close_socket();
  maybe_finish();
}

void SmtpConnection::maybe_finish() {
  if (ops_ != 0) {
    return;
  }
  if (state_ == State::kResetting) {
    new_session();
    connect_next();
    return;
  }
  if (state_ != State::kTearingDown) {
    return;
  }
  state_ = State::kFinished;
  if (working_) {
    --dest_->sources[source_].working;
  }
  scheduler_.connection_closed(this);
  delete this;
}

void SmtpConnection::on_cancel(int /*res*/, uint32_t /*flags*/) {}
void SmtpConnection::on_close(int /*res*/, uint32_t /*flags*/) {}

void SmtpConnection::on_rcpt_outcome(const SessionTxn& txn, size_t index, const Outcome& outcome) {
  scheduler_.record_outcome(txn, index, outcome, peer_, mx_, tls_summary_);
}

void SmtpConnection::on_txn_done(SessionTxn& txn) {
  scheduler_.txn_done(txn);
}

void SmtpConnection::on_txn_returned(SessionTxn&& txn) {
  scheduler_.txn_returned(std::move(txn));
}

}  // namespace ringmail::engine
