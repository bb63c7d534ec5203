// submission_conn.h — internal to the submission listener: one client
// (Submission::Conn), shared by submission.cc (accept, limits, AUTH worker
// glue) and submission_conn.cc (the session's decisions). Not a public
// header; see engine/submission.h for the contract.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "engine/log.h"
#include "engine/resolver.h"
#include "engine/runtime.h"
#include "engine/shard.h"
#include "engine/submission.h"

namespace ringmail::engine {
namespace submission_internal {

// After the last reply: how long a connection waits for its output to drain
// and for the client's EOF before closing anyway.
inline constexpr Millis kLinger{2000};

// Client-controlled text in log lines and trace headers: printable ASCII,
// bounded.
inline std::string printable(std::string_view s, size_t max = 64) {
  std::string out;
  for (char c : s.substr(0, max)) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x21 && u < 0x7f && c != '"' && c != '\\' && c != '(' && c != ')' ? c : '?');
  }
  return out;
}

inline std::string rfc5322_date(int64_t wall_ms) {
  time_t t = static_cast<time_t>(wall_ms / 1000);
  tm g{};
  gmtime_r(&t, &g);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &g);
  return std::string(buf, n);
}

}  // namespace submission_internal

// ---------------------------------------------------------------------------
// One client

class Submission::Conn {
  using Action = proto::ServerSession::Action;

 public:
  Conn(Submission& owner, Listener& l, int fd, const sockaddr_storage& peer, uint64_t id)
      : owner_(owner),
        shard_(owner.shard_),
        listener_(l),
        fd_(fd),
        id_(id),
        peer_(format_sockaddr(peer)),
        key_(client_key(peer)),
        trusted_(owner.trusted(peer)),
        session_(l.server),
        idle_timer_(&Conn::on_idle_timer, this),
        tls_timer_(&Conn::on_tls_timer, this),
        command_timer_(&Conn::on_command_timer, this),
        content_timer_(&Conn::on_content_timer, this) {
    recv_op_.conn = this;
    recv_op_.fn = &Conn::on_recv;
    send_op_.conn = this;
    send_op_.fn = &Conn::on_send;
    cancel_op_.conn = this;
    cancel_op_.fn = &Conn::on_noop;
  }

  ~Conn() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  uint64_t id() const { return id_; }
  const std::string& key() const { return key_; }

  /// An admitted client: greeting, or the TLS handshake first.
  void start() {
    touch_idle();
    if (listener_.cfg->tls == SubmissionListener::Tls::kImplicit) {
      start_tls();
    } else {
      session_.start();
      take_output();
    }
    drive();
  }

  /// max_sessions is full and this session has waited longest for a
  /// command: it makes room for a newcomer.
  void reclaim() {
    if (state_ != State::kOpen) {
      return;
    }
    RM_LOG_INFO("submission: closing the idle session of %s for a new client (max_sessions)",
                peer_.c_str());
    session_.close_with(
        421, "4.3.2 " + session_config().hostname + " Error: too many sessions; closing idle ones");
    take_output();
    begin_close();
  }

  /// The engine is stopping.
  void shutdown_now() {
    if (state_ != State::kOpen) {
      return;
    }
    if (tls_handshaking_) {
      finish();
      return;
    }
    session_.close_with(421, "4.3.2 " + session_config().hostname + " Service shutting down");
    take_output();
    begin_close();
  }

  void on_ack(proto::Ack ack);
  void on_auth_result(bool ok);

  /// True once the connection is dead with nothing outstanding: the caller
  /// deletes it. Runs conn_closed() once.
  bool retire_if_done() {
    if (state_ != State::kDead || ops_ != 0 || retired_) {
      return false;
    }
    retired_ = true;
    cancel_timers();
    ::close(fd_);
    fd_ = -1;
    owner_.conn_closed(this);
    return true;
  }

  /// Runs `fn` on `c`, then deletes `c` if that finished it. For every
  /// entry point that is not a completion (timers, acks, accept, stop).
  template <class F>
  static void run(Conn* c, F fn) {
    fn(c);
    if (c->retire_if_done()) {
      delete c;
    }
  }

 private:
  struct Op final : Completion {
    Conn* conn = nullptr;
    void (Conn::*fn)(int, uint32_t) = nullptr;
    void complete(int res, uint32_t flags) override {
      Conn* c = conn;
      --c->ops_;
      (c->*fn)(res, flags);
      if (c->retire_if_done()) {
        delete c;
      }
    }
  };
  enum class State : uint8_t { kOpen, kClosing, kDraining, kDead };

  const proto::ServerConfig& session_config() const { return listener_.server; }
  bool tls_up() const { return tls_ != nullptr && !tls_handshaking_; }

  // --- session -----------------------------------------------------------
  void drive();
  void decide();
  void on_rcpt(const proto::Decision& d);
  void on_message(const proto::Decision& d);
  void on_auth(const proto::AuthRequest& a);
  std::string received_header() const;

  // --- TLS ---------------------------------------------------------------
  void start_tls() {
    auto ch = TlsChannel::server(*listener_.tls);
    if (!ch.ok()) {
      RM_LOG_WARN("submission %s: %s", listener_.cfg->listen.c_str(), ch.error().message.c_str());
      finish();
      return;
    }
    tls_ = std::move(*ch);
    tls_handshaking_ = true;
    TimePoint now = shard_.clock().now();
    owner_.begin_handshake(this, now);
    shard_.timers().schedule(&tls_timer_, now + shard_.config().submission.tls_handshake_timeout);
  }

  void continue_handshake() {
    TlsChannel::Status st = tls_->handshake();
    tls_->take_output(&queued_);
    if (st == TlsChannel::Status::kWant) {
      return;
    }
    tls_timer_.cancel();
    tls_handshaking_ = false;
    if (st != TlsChannel::Status::kDone) {
      shard_.stats().tls_server_failed.fetch_add(1, std::memory_order_relaxed);
      RM_LOG_INFO("submission %s: TLS with %s failed: %s", listener_.cfg->listen.c_str(),
                  peer_.c_str(), tls_->error().c_str());
      tls_.reset();  // the alert (if any) is in queued_; nothing more is said
      begin_close();
      return;
    }
    shard_.stats().tls_server_ok.fetch_add(1, std::memory_order_relaxed);
    tls_summary_ = tls_->summary();
    // Out of the handshake slots; a session slot now, like any newcomer.
    bool admitted = owner_.finish_handshake(this, shard_.clock().now());
    if (listener_.cfg->tls == SubmissionListener::Tls::kImplicit) {
      session_.set_tls_active(true);
      if (admitted) {
        session_.start();
      }
    } else {
      session_.tls_established();
    }
    if (!admitted) {
      session_.close_with(421, "4.7.0 " + session_config().hostname + " Error: too many sessions");
    }
    take_output();
  }

  /// Decrypts buffered TLS records into in_. Returns the bytes added.
  size_t pull_plaintext() {
    if (!tls_up() || state_ != State::kOpen) {
      return 0;
    }
    compact_input();
    size_t added = 0;
    while (in_end_ < kRecvBuffer) {
      size_t n = 0;
      TlsChannel::Status st = tls_->read(std::span<char>(in_ + in_end_, kRecvBuffer - in_end_), &n);
      if (st == TlsChannel::Status::kDone) {
        in_end_ += n;
        added += n;
        continue;
      }
      if (st == TlsChannel::Status::kClosed) {
        peer_eof_ = true;
      } else if (st == TlsChannel::Status::kFailed) {
        RM_LOG_INFO("submission: TLS error from %s: %s", peer_.c_str(), tls_->error().c_str());
        tls_failed_ = true;
      }
      break;
    }
    return added;
  }

  // --- output ------------------------------------------------------------
  void take_output() {
    std::string_view out = session_.output();
    if (out.empty()) {
      return;
    }
    if (tls_up()) {
      if (tls_->write(std::span<const char>(out.data(), out.size())) != TlsChannel::Status::kDone) {
        tls_failed_ = true;
      }
      tls_->take_output(&queued_);
    } else {
      queued_.append(out);  // plaintext, including the 220 to STARTTLS
    }
    session_.consume_output(out.size());
    if (queued_.size() >= kMaxQueuedOutput) {
      output_blocked_ = true;
    }
  }

  void flush() {
    if (sending_ || state_ == State::kDead) {
      return;
    }
    if (sent_ == inflight_.size()) {
      inflight_.clear();
      sent_ = 0;
      if (queued_.empty()) {
        if (state_ == State::kClosing) {
          if (peer_eof_) {
            finish();
          } else {
            ::shutdown(fd_,
                       SHUT_WR);  // FIN, then read to EOF (bounded by submission_internal::kLinger)
            state_ = State::kDraining;
            arm_recv();
          }
        }
        return;
      }
      inflight_.swap(queued_);
      output_blocked_ = false;
    }
    sending_ = true;
    ++ops_;
    shard_.ring().send(fd_, inflight_.data() + sent_, inflight_.size() - sent_, MSG_NOSIGNAL,
                       &send_op_);
  }

  void on_send(int res, uint32_t /*flags*/) {
    sending_ = false;
    if (state_ == State::kDead) {
      return;
    }
    if (res < 0) {
      finish();
      return;
    }
    sent_ += static_cast<size_t>(res);
    if (state_ == State::kOpen && sent_ == inflight_.size()) {
      drive();  // resumes a session paused by output_blocked_
    } else {
      flush();
    }
  }

  // --- input -------------------------------------------------------------
  void compact_input() {
    if (in_begin_ == in_end_) {
      in_begin_ = in_end_ = 0;
    } else if (in_begin_ > 0) {
      std::memmove(in_, in_ + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
  }

  void arm_recv() {
    if (recv_armed_ || peer_eof_ || state_ == State::kDead) {
      return;
    }
    char* target;
    size_t room;
    if (tls_ != nullptr) {
      // Threat: a client that sends while its replies wait. Ciphertext is
      // taken only while the plaintext buffer has room.
      if (state_ == State::kOpen && !tls_handshaking_ && in_end_ - in_begin_ >= kRecvBuffer) {
        return;
      }
      target = cipher_;
      room = kRecvBuffer;
    } else {
      if (state_ != State::kOpen) {
        in_begin_ = in_end_ = 0;  // the session is over: input is discarded
      }
      compact_input();
      if (in_end_ == kRecvBuffer) {
        return;  // full of input the session cannot take yet; drive() re-arms
      }
      target = in_ + in_end_;
      room = kRecvBuffer - in_end_;
    }
    recv_target_ = target;
    recv_armed_ = true;
    ++ops_;
    shard_.ring().recv(fd_, target, room, &recv_op_);
  }

  void on_recv(int res, uint32_t /*flags*/) {
    recv_armed_ = false;
    if (state_ == State::kDead) {
      return;
    }
    if (res == -EINTR || res == -EAGAIN) {
      arm_recv();
      return;
    }
    if (res < 0) {
      finish();
      return;
    }
    if (res == 0) {
      peer_eof_ = true;
      if (state_ == State::kDraining || state_ == State::kClosing) {
        finish();
      } else {
        begin_close();
      }
      return;
    }
    if (state_ != State::kOpen) {
      arm_recv();  // discard while closing
      return;
    }
    touch_idle();
    if (!command_timer_.armed() && !tls_handshaking_ && !waiting_ &&
        session_.awaiting() == proto::ServerSession::Awaiting::kLine) {
      // The first byte of a line (over TLS, maybe of a record still
      // incomplete): the line is timed from here.
      arm_command_deadline(shard_.clock().now());
    }
    auto n = static_cast<size_t>(res);
    if (tls_ != nullptr) {
      // The receive may have been armed into in_ before STARTTLS was
      // accepted: the bytes are the ClientHello either way.
      tls_->feed(std::span<const char>(recv_target_, n));
      if (tls_handshaking_) {
        continue_handshake();
      }
    } else {
      in_end_ += n;
    }
    drive();
  }

  // --- timers and closing ---------------------------------------------------
  void touch_idle() {
    shard_.timers().schedule(&idle_timer_,
                             shard_.clock().now() + shard_.config().submission.idle_timeout);
  }

  static void on_idle_timer(void* self) {
    run(static_cast<Conn*>(self), [](Conn* c) {
      if (c->state_ != State::kOpen || c->tls_handshaking_) {
        c->finish();  // submission_internal::kLinger passed, or a handshake that never started
        return;
      }
      c->session_.close_with(421,
                             "4.4.2 " + c->session_config().hostname + " Error: timeout exceeded");
      c->take_output();
      c->begin_close();
    });
  }

  static void on_tls_timer(void* self) {
    run(static_cast<Conn*>(self), [](Conn* c) {
      if (c->tls_handshaking_) {
        RM_LOG_INFO(
            "submission: TLS handshake from %s not completed within %lldms", c->peer_.c_str(),
            static_cast<long long>(c->shard_.config().submission.tls_handshake_timeout.count()));
        c->shard_.stats().submission_timeouts.fetch_add(1, std::memory_order_relaxed);
        c->shard_.stats().tls_server_failed.fetch_add(1, std::memory_order_relaxed);
        c->finish();
      }
    });
  }

  // --- deadlines on the client's input (see submission.h) ----------------
  void arm_command_deadline(TimePoint now) {
    command_mark_ = session_.commands();
    shard_.timers().schedule(&command_timer_, now + shard_.config().submission.command_timeout);
  }

  /// After the session moved: which deadlines run, and whether the session
  /// is one that may be reclaimed.
  void update_deadlines();
  /// A deadline passed: 421 4.4.2 with `why`, and close; the log names
  /// the `limit` (its configuration key).
  void cut_off(std::string_view why, const char* limit);

  static void on_command_timer(void* self) {
    run(static_cast<Conn*>(self), [](Conn* c) {
      if (c->state_ == State::kOpen && !c->tls_handshaking_ && !c->waiting_) {
        c->cut_off("command timeout exceeded", "command_timeout");
      }
    });
  }

  static void on_content_timer(void* self) {
    run(static_cast<Conn*>(self), [](Conn* c) {
      if (c->state_ == State::kOpen && !c->tls_handshaking_ && !c->waiting_) {
        c->cut_off("message data too slow", "data_min_rate");
      }
    });
  }

  void cancel_timers() {
    idle_timer_.cancel();
    tls_timer_.cancel();
    command_timer_.cancel();
    content_timer_.cancel();
  }

  void begin_close() {
    if (state_ != State::kOpen) {
      return;
    }
    state_ = State::kClosing;
    output_blocked_ = false;
    command_timer_.cancel();
    content_timer_.cancel();
    if (tls_up() && !tls_failed_) {
      tls_->close_notify();
      tls_->take_output(&queued_);
    }
    owner_.release_slot(this);
    shard_.timers().schedule(&idle_timer_, shard_.clock().now() + submission_internal::kLinger);
    flush();
    arm_recv();
  }

  void finish() {
    if (state_ == State::kDead) {
      return;
    }
    state_ = State::kDead;
    owner_.release_slot(this);
    cancel_timers();
    // The socket is closed only after these CQEs: a queued SQE must never
    // meet a reused fd number.
    if (recv_armed_) {
      ++ops_;
      shard_.ring().cancel(&recv_op_, &cancel_op_);
    }
    if (sending_) {
      ++ops_;
      shard_.ring().cancel(&send_op_, &cancel_op_);
    }
  }

  void on_noop(int, uint32_t) {}

  friend class Submission;

  Submission& owner_;
  Shard& shard_;
  Listener& listener_;
  int fd_;
  uint64_t id_;
  std::string peer_;  // "ip:port"
  std::string key_;   // client_key(): per-address limits
  bool trusted_;
  proto::ServerSession session_;
  Op recv_op_, send_op_, cancel_op_;
  Timer idle_timer_, tls_timer_;
  Timer command_timer_;  // submission.command_timeout for the line being received
  Timer content_timer_;  // data_rate_grace + bytes / data_min_rate for the message
  WaitLink wait_;        // in owner_.handshakes_, idle_ or idle_tx_
  Slot slot_ = Slot::kNone;
  bool counted_ = false;       // counted in owner_.per_client_
  uint32_t command_mark_ = 0;  // session_.commands() when command_timer_ was armed
  uint32_t wait_mark_ = 0;     // session_.commands() when wait_ was last placed
  bool content_started_ = false;
  TimePoint content_start_{};
  uint64_t content_base_ = 0;  // session_.content_bytes() at content_start_
  std::unique_ptr<TlsChannel> tls_;
  std::string tls_summary_;
  State state_ = State::kOpen;
  uint32_t ops_ = 0;
  bool retired_ = false;
  bool recv_armed_ = false;
  bool sending_ = false;
  bool peer_eof_ = false;
  bool output_blocked_ = false;
  bool waiting_ = false;
  bool in_drive_ = false;
  bool tls_handshaking_ = false;
  bool tls_failed_ = false;
  std::string auth_user_;  // printable, for the log
  std::string auth_mech_;
  char* recv_target_ = nullptr;
  std::string queued_;    // bytes for the wire, waiting for the send in flight
  std::string inflight_;  // the send in flight
  size_t sent_ = 0;
  size_t in_begin_ = 0;  // unconsumed plaintext input is in_[in_begin_, in_end_)
  size_t in_end_ = 0;
  char in_[kRecvBuffer];
  char cipher_[kRecvBuffer];  // TLS receives land here
};

}  // namespace ringmail::engine
