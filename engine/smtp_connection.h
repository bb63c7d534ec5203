/// smtp_connection.h — drives one DeliverySession over a TCP socket on the
/// shard's io_uring.
///
/// The connection only moves bytes and timers: connect (trying the route's
/// hosts in order), one receive always armed, at most one send in flight
/// (liburing's proxy example explains the reorder hazard of two), and three
/// timers: the session's reply deadline (armed once per wait, so a server
/// trickling bytes cannot stretch it), the send-progress deadline
/// (data_block) and the idle deadline for a parked connection.
///
/// Lifetime: created by the Scheduler, owned by itself. When the session is
/// done or fails it cancels its operations, closes the socket, waits for
/// every outstanding CQE, tells the scheduler and deletes itself.
/// Thread safety: one shard thread.
#pragma once

#include <sys/socket.h>
#include <cstdint>

#include <optional>
#include <string>

#include "engine/delivery_session.h"
#include "engine/resolver.h"
#include "engine/ring.h"
#include "engine/timer_wheel.h"

namespace ringmail::engine {

class Shard;
class Scheduler;
struct Destination;

class SmtpConnection final : public SessionObserver {
 public:
  SmtpConnection(Shard& shard, Scheduler& scheduler, Destination* dest, uint32_t source);
  ~SmtpConnection();
  SmtpConnection(const SmtpConnection&) = delete;
  SmtpConnection& operator=(const SmtpConnection&) = delete;

  void start();
  Destination* dest() const { return dest_; }
  /// Index of the egress source in dest()->sources.
  uint32_t source() const { return source_; }
  bool can_accept_txn() const { return session_ && session_->can_accept_txn(); }
  bool idle() const { return session_ && session_->idle(); }
  /// Session reached the ready state at least once on this connection.
  bool working() const { return working_; }
  /// True when the session ended before becoming ready (connect failure,
  /// greeting or EHLO refused) — the destination looks unhealthy.
  bool failed_before_ready() const { return failed_before_ready_; }
  const std::optional<proto::Reply>& failure() const { return failure_; }
  bool server_closing() const { return session_ && session_->server_closing(); }
  void add_txn(SessionTxn txn);
  /// Parks an idle connection: QUIT after the idle timeout unless work comes.
  void park();
  void unpark();
  /// Sends QUIT when idle (now, or once what is in flight is done).
  void quit();
  /// Tears the connection down now; in-flight recipients are deferred.
  void abort(std::string_view why);
  const std::string& peer() const { return peer_; }
  const std::string& mx() const { return mx_; }

  // SessionObserver
  void on_rcpt_outcome(const SessionTxn& txn, size_t index, const Outcome& outcome) override;
  void on_txn_done(SessionTxn& txn) override;
  void on_txn_returned(SessionTxn&& txn) override;

 private:
  struct Op final : Completion {
    SmtpConnection* conn = nullptr;
    void (SmtpConnection::*fn)(int res, uint32_t flags) = nullptr;
    void complete(int res, uint32_t flags) override;
  };

  void new_session();
  void connect_next();
  void on_connect(int res, uint32_t flags);
  void on_recv(int res, uint32_t flags);
  void on_send(int res, uint32_t flags);
  void on_cancel(int res, uint32_t flags);
  void on_close(int res, uint32_t flags);
  void arm_recv();
  void flush();
  /// After every call into the session: send, re-arm timers, hand the
  /// connection to the scheduler, or close.
  void after_session();
  void close_socket();
  void begin_teardown();
  void maybe_finish();
  static void on_reply_timer(void* self);
  static void on_send_timer(void* self);
  static void on_idle_timer(void* self);
  static void on_connect_timer(void* self);
  Millis timeout_for(DeliverySession::Wait w) const;

  Shard& shard_;
  Scheduler& scheduler_;
  Destination* dest_;
  uint32_t source_;
  std::optional<DeliverySession> session_;
  int fd_ = -1;
  size_t next_host_ = 0;
  std::vector<Candidate> candidates_;  // a copy: the destination may re-resolve meanwhile
  std::string peer_;
  std::string mx_;
  std::string last_connect_error_;
  Op connect_op_, recv_op_, send_op_, cancel_op_, close_op_;
  uint32_t ops_ = 0;  // outstanding SQEs
  enum class State : uint8_t {
    kConnecting,
    kOpen,
    kResetting,    // closing this socket to try the next host; waits for CQEs
    kTearingDown,  // closing for good; waits for CQEs, then deletes itself
    kFinished,
  };
  State state_ = State::kConnecting;
  bool recv_armed_ = false;
  bool connect_pending_ = false;
  bool sending_ = false;
  bool working_ = false;
  bool failed_before_ready_ = false;
  bool parked_ = false;
  bool in_session_call_ = false;
  std::optional<proto::Reply> failure_;
  uint64_t seen_wait_gen_ = 0;
  SendBatch inflight_;
  msghdr send_msg_{};
  Timer reply_timer_, send_timer_, idle_timer_, connect_timer_;
  static constexpr size_t kRecvBuf = 16 * 1024;
  char rbuf_[kRecvBuf];
};

}  // namespace ringmail::engine
