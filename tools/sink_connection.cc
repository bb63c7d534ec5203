// One ringmail-sink client connection (see sink_connection.h).
#include "tools/sink_connection.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/log.h"
#include "tools/sink_worker.h"

namespace ringmail::tools {
namespace {

using Action = proto::ServerSession::Action;
using proto::DecisionKind;

// 10,000 idle connections must fit in about 200 MB: the receive buffer plus
// the session, nothing per connection beyond that until replies queue.
static_assert(sizeof(SinkConnection) <= SinkConnection::kRecvBuffer + 4096,
              "a connection is its receive buffer plus a small session");

// After the last reply: how long the connection waits for its output to
// drain and for the client's EOF before it closes anyway.
constexpr engine::Millis kLinger{2000};

void bump(std::atomic<uint64_t>& counter, uint64_t n = 1) {
  // Single writer (the worker thread): no read-modify-write needed.
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void append_path(std::string& out, const proto::Mailbox& m) {
  out.append(m.local);
  if (!m.domain.empty()) {
    out.push_back('@');
    out.append(m.domain);
  }
}

}  // namespace

void SinkConnection::Op::complete(int res, uint32_t flags) {
  --conn->ops_;
  (conn->*fn)(res, flags);
}

SinkConnection::SinkConnection(Worker& worker, int fd, bool admitted)
    : worker_(worker),
      fd_(fd),
      admitted_(admitted),
      session_(worker.server_config()),
      idle_timer_(&SinkConnection::on_idle_timer, this),
      reply_timer_(&SinkConnection::on_reply_timer, this),
      greeting_timer_(&SinkConnection::on_greeting_timer, this) {
  recv_op_.conn = this;
  recv_op_.fn = &SinkConnection::on_recv;
  send_op_.conn = this;
  send_op_.fn = &SinkConnection::on_send;
}

// Normally runs after maybe_retire() (no operation outstanding). At a
// worker's forced shutdown it runs after the ring itself is gone.
SinkConnection::~SinkConnection() {
  release_session_slot();
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void SinkConnection::start() {
  touch_idle();
  if (!admitted_) {
    session_.close_with(421, "4.7.0 too many connections");
    take_output();
    begin_close();
    return;
  }
  uint32_t delay = worker_.options().greeting_delay_ms;
  if (delay > 0) {
    // Input that arrives before the greeting is fed to the session, which
    // refuses the early talker (554) as Postfix does.
    worker_.timers().schedule(&greeting_timer_, worker_.now() + engine::Millis(delay));
    arm_recv();
    return;
  }
  session_.start();
  drive();
}

void SinkConnection::on_greeting_timer(void* self) {
  auto* c = static_cast<SinkConnection*>(self);
  if (c->state_ != State::kOpen) {
    return;
  }
  c->session_.start();
  c->drive();
}

// ---------------------------------------------------------------------------
// Session

// Feeds buffered input to the session until it needs more input, waits for
// something (a delayed reply, the client reading its replies) or closes.
void SinkConnection::drive() {
  while (state_ == State::kOpen && !delayed_ && !output_blocked_) {
    auto [used, action] =
        session_.feed(std::span<const char>(in_ + in_begin_, in_end_ - in_begin_));
    in_begin_ += used;
    take_output();
    if (action == Action::kNeedInput) {
      break;
    }
    if (action == Action::kDecide) {
      decide();
    } else if (action == Action::kClose || action == Action::kStartTls) {
      begin_close();  // kStartTls cannot happen: STARTTLS is never offered
    }
    // kFlush: take_output() emptied the session's buffer; go on unless
    // output_blocked_ says the client must read first.
  }
  if (state_ != State::kOpen) {
    return;
  }
  if (in_begin_ == in_end_ && !recv_armed_) {
    in_begin_ = in_end_ = 0;
  }
  flush();
  arm_recv();
}

void SinkConnection::decide() {
  const proto::Decision& d = session_.decision();
  switch (d.kind) {
    case DecisionKind::kHelo:
      session_.accept();
      if (!worker_.options().size && session_.ehlo()) {
        take_ehlo_reply_without_size();
      }
      break;
    case DecisionKind::kMail:
      answer(worker_.policy().on_mail(d.command->path));
      break;
    case DecisionKind::kRcpt: {
      Verdict v = worker_.policy().on_rcpt(d.command->path);
      if (!v.accepted()) {
        bump(worker_.mutable_stats().rcpt_refused);
      }
      answer(v);
      break;
    }
    case DecisionKind::kMessage: {
      Verdict v = worker_.policy().on_message(*d.transaction);
      uint32_t delay = worker_.options().delay_ms;
      if (delay > 0) {
        pending_ = v;
        delayed_ = true;
        worker_.timers().schedule(&reply_timer_, worker_.now() + engine::Millis(delay));
        return;
      }
      finish_message(v);
      break;
    }
    case DecisionKind::kStartTls:
    case DecisionKind::kAuth:  // neither is advertised
      session_.respond(502, "5.5.1 Error: command not implemented");
      break;
    case DecisionKind::kNone:
      break;
  }
  take_output();
}

void SinkConnection::answer(const Verdict& v) {
  if (v.accepted()) {
    session_.accept();
  } else {
    session_.respond(v.code, v.text);
  }
}

void SinkConnection::on_reply_timer(void* self) {
  auto* c = static_cast<SinkConnection*>(self);
  c->delayed_ = false;
  if (c->state_ != State::kOpen) {
    return;
  }
  c->finish_message(c->pending_);
  c->take_output();
  c->drive();
}

// Answers the end of data. Counts first, so the count is in the stats
// before the client can read the reply.
void SinkConnection::finish_message(const Verdict& v) {
  WorkerStats& st = worker_.mutable_stats();
  switch (v.kind) {
    case Verdict::Kind::kAccept: {
      const proto::Transaction& tx = *session_.decision().transaction;
      if (!worker_.options().dump_dir.empty() && !dump_message(tx)) {
        bump(st.deferred);
        session_.respond(451, "4.3.0 Error: cannot write the dump file");
        return;
      }
      if (worker_.shared().rcpt_log_fd >= 0) {
        std::string lines;
        for (const proto::Recipient& r : tx.recipients) {
          append_path(lines, r.mailbox);
          lines.push_back('\n');
        }
        if (!write_all(worker_.shared().rcpt_log_fd, lines)) {
          bump(st.deferred);
          session_.respond(451, "4.3.0 Error: cannot write the recipient log");
          return;
        }
      }
      bump(st.recipients, tx.recipients.size());
      // Release: a reader that sees this message sees its recipients.
      st.messages.store(st.messages.load(std::memory_order_relaxed) + 1, std::memory_order_release);
      st.last_message_ns.store(worker_.now().time_since_epoch().count(), std::memory_order_relaxed);
      session_.accept();
      return;
    }
    case Verdict::Kind::kRefuse:
      bump(v.code < 500 ? st.deferred : st.rejected);
      session_.respond(v.code, v.text);
      return;
    case Verdict::Kind::kDrop:
      // No reply: the decision stays pending and nothing more is fed.
      bump(st.dropped);
      begin_close();
      return;
  }
}

// --dump-dir: plain blocking writes (a debugging mode, not a benchmark one).
// The file appears under its final name only when complete.
bool SinkConnection::dump_message(const proto::Transaction& tx) {
  const std::string& dir = worker_.options().dump_dir;
  uint64_t n = worker_.shared().dump_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string path = dir + "/" + std::to_string(n) + ".eml";
  std::string tmp = path + ".tmp";
  std::string head = "X-Sink-Mail-From: <";
  if (!tx.null_sender) {
    append_path(head, tx.sender);
  }
  head += ">\r\n";
  for (const proto::Recipient& r : tx.recipients) {
    head += "X-Sink-Rcpt-To: <";
    append_path(head, r.mailbox);
    head += ">\r\n";
  }
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0 && write_all(fd, head) && write_all(fd, tx.body);
  if (fd >= 0 && ::close(fd) != 0) {
    ok = false;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
  }
  if (!ok) {
    RM_LOG_WARN("dump %s: %s", path.c_str(), std::strerror(errno));
    ::unlink(tmp.c_str());
  }
  return ok;
}

// ---------------------------------------------------------------------------
// Output

void SinkConnection::take_output() {
  std::string_view out = session_.output();
  if (out.empty()) {
    return;
  }
  queued_.append(out);
  session_.consume_output(out.size());
  if (queued_.size() >= kMaxQueuedOutput) {
    output_blocked_ = true;
  }
}

// --no-size: ServerConfig always advertises SIZE, so the sink removes that
// line from the EHLO reply (the only output at this point: drive() took
// everything before the decision).
void SinkConnection::take_ehlo_reply_without_size() {
  std::string_view out = session_.output();
  size_t last_kept = std::string::npos;  // offset in queued_ of the last kept line
  size_t pos = 0;
  while (pos < out.size()) {
    size_t eol = out.find("\r\n", pos);
    size_t end = eol == std::string_view::npos ? out.size() : eol + 2;
    std::string_view line = out.substr(pos, end - pos);
    bool is_size = line.size() >= 8 && line.substr(4, 4) == "SIZE" &&
                   (line.size() == 8 || line[8] == ' ' || line[8] == '\r');
    if (!is_size) {
      last_kept = queued_.size();
      queued_.append(line);
    } else if (line.size() > 3 && line[3] == ' ' && last_kept != std::string::npos) {
      queued_[last_kept + 3] = ' ';  // SIZE was the last line
    }
    pos = end;
  }
  session_.consume_output(out.size());
}

void SinkConnection::flush() {
  if (sending_ || state_ == State::kDead) {
    return;
  }
  if (sent_ == inflight_.size()) {
    inflight_.clear();
    sent_ = 0;
    if (queued_.empty()) {
      if (state_ == State::kClosing && peer_eof_) {
        finish();
      } else if (state_ == State::kClosing) {
        // Everything is out: FIN, then read to EOF (bounded by kLinger).
        ::shutdown(fd_, SHUT_WR);
        state_ = State::kDraining;
        arm_recv();
      }
      return;
    }
    inflight_.swap(queued_);
    if (output_blocked_) {
      output_blocked_ = false;
      // drive() runs when this send completes (on_send).
    }
  }
  sending_ = true;
  ++ops_;
  worker_.ring().send(fd_, inflight_.data() + sent_, inflight_.size() - sent_, MSG_NOSIGNAL,
                      &send_op_);
}

void SinkConnection::on_send(int res, uint32_t /*flags*/) {
  sending_ = false;
  if (state_ == State::kDead) {
    maybe_retire();
    return;
  }
  if (res < 0) {
    finish();  // EPIPE, ECONNRESET: the client is gone
    return;
  }
  sent_ += static_cast<size_t>(res);
  if (state_ == State::kOpen && !delayed_ && sent_ == inflight_.size()) {
    drive();  // resumes a session paused by output_blocked_; flushes queued_
  } else {
    flush();
  }
}

// ---------------------------------------------------------------------------
// Input

void SinkConnection::arm_recv() {
  if (recv_armed_ || peer_eof_ || state_ == State::kDead) {
    return;
  }
  if (state_ != State::kOpen) {
    in_begin_ = in_end_ = 0;  // the session is over: input is discarded
  } else if (in_begin_ > 0) {
    std::memmove(in_, in_ + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  if (in_end_ == kRecvBuffer) {
    return;  // full of input the session cannot take yet; drive() re-arms
  }
  recv_armed_ = true;
  ++ops_;
  worker_.ring().recv(fd_, in_ + in_end_, kRecvBuffer - in_end_, &recv_op_);
}

void SinkConnection::on_recv(int res, uint32_t /*flags*/) {
  recv_armed_ = false;
  if (state_ == State::kDead) {
    maybe_retire();
    return;
  }
  if (res == -EINTR || res == -EAGAIN) {
    arm_recv();
    return;
  }
  if (res < 0) {
    finish();  // reset: nothing more can reach this client
    return;
  }
  if (res == 0) {
    // EOF: the client sent all it will send. Replies still queued (to a
    // client that half-closed after its last command) go out first.
    peer_eof_ = true;
    if (state_ == State::kDraining) {
      finish();
    } else if (state_ == State::kOpen) {
      begin_close();
    }
    return;
  }
  bump(worker_.mutable_stats().bytes, static_cast<uint64_t>(res));
  if (state_ != State::kOpen) {
    arm_recv();  // discard while closing
    return;
  }
  in_end_ += static_cast<size_t>(res);
  touch_idle();
  drive();
}

// ---------------------------------------------------------------------------
// Timers and closing

void SinkConnection::touch_idle() {
  worker_.timers().schedule(&idle_timer_,
                            worker_.now() + engine::Millis(worker_.options().idle_timeout_ms));
}

void SinkConnection::on_idle_timer(void* self) {
  auto* c = static_cast<SinkConnection*>(self);
  if (c->state_ != State::kOpen) {
    c->finish();  // kLinger passed
    return;
  }
  c->session_.close_with(421,
                         "4.4.2 " + c->worker_.options().hostname + " Error: timeout exceeded");
  c->take_output();
  c->begin_close();
}

void SinkConnection::begin_close() {
  if (state_ != State::kOpen) {
    return;
  }
  state_ = State::kClosing;
  output_blocked_ = false;
  reply_timer_.cancel();
  greeting_timer_.cancel();
  release_session_slot();
  worker_.timers().schedule(&idle_timer_, worker_.now() + kLinger);
  flush();
  arm_recv();
}

void SinkConnection::finish() {
  if (state_ == State::kDead) {
    return;
  }
  state_ = State::kDead;
  release_session_slot();
  idle_timer_.cancel();
  reply_timer_.cancel();
  greeting_timer_.cancel();
  // The socket is closed only after these CQEs: a queued SQE must never
  // meet a reused fd number.
  if (recv_armed_) {
    worker_.ring().cancel(&recv_op_, nullptr);
  }
  if (sending_) {
    worker_.ring().cancel(&send_op_, nullptr);
  }
  maybe_retire();
}

void SinkConnection::release_session_slot() {
  if (admitted_) {
    admitted_ = false;
    if (worker_.options().max_connections != 0) {
      worker_.shared().active_sessions.fetch_sub(1, std::memory_order_relaxed);
    }
  }
}

void SinkConnection::maybe_retire() {
  if (state_ != State::kDead || ops_ != 0 || retired_) {
    return;
  }
  retired_ = true;
  ::close(fd_);
  fd_ = -1;
  worker_.retire(this);
}

}  // namespace ringmail::tools
