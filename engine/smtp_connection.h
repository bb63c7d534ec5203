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
/// TLS (engine/tls.h): when the session asks for a handshake after
/// STARTTLS, or right after connect for implicit TLS (Shaping::implicit_tls),
/// a TlsChannel is put between the socket and the session. Received
/// ciphertext is fed to the channel and decrypted into the receive buffer
/// (the armed receive never overlaps this: it is re-armed afterwards);
/// the session's plaintext output is encrypted in batches of at most
/// TlsChannel::kMaxWriteBatch bytes and the ciphertext goes out with the
/// same one-send-in-flight rule. The handshake has its own deadline
/// (tls.handshake_timeout). SNI and verification use the MX host name;
/// sessions are resumed per (destination, MX host) from the shard's
/// TlsClient cache. An opportunistic handshake that fails is retried once
/// on a new plaintext connection to the same address, and the address is
/// remembered as plaintext-only for TlsClient::kFallbackMemory.
///
/// Lifetime: created by the Scheduler, owned by itself. When the session is
/// done or fails it cancels its operations, closes the socket, waits for
/// every outstanding CQE, tells the scheduler and deletes itself.
/// Thread safety: one shard thread.
#pragma once

#include <sys/socket.h>
#include <cstdint>

#include <memory>
#include <optional>
#include <string>

#include "engine/delivery_session.h"
#include "engine/resolver.h"
#include "engine/ring.h"
#include "engine/timer_wheel.h"
#include "engine/tls.h"

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
  /// Idle and waiting in its source's idle list for work.
  bool parked() const { return parked_; }
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
  /// "TLSv1.3 TLS_AES_256_GCM_SHA384" while TLS is up; empty in plaintext.
  const std::string& tls_summary() const { return tls_summary_; }
  /// For a connection that failed before ready: kTls, kAuth or kConnect.
  Stage failure_stage() const { return failure_stage_; }

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
  /// Starts the reply deadline for the session's current wait, or defers
  /// it until the bytes being sent are out (all_sent()).
  void arm_reply_timer();
  void all_sent();
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
  static void on_tls_timer(void* self);
  Millis timeout_for(DeliverySession::Wait w) const;
  // TLS
  void start_tls();
  void continue_handshake();
  void tls_failed(const std::string& what);
  /// Decrypts and feeds the session until TLS wants more input.
  void read_plaintext();
  /// Encrypts up to one batch of the session's output. False on a TLS
  /// error (reported through tls_timer_, never re-entrantly).
  bool encrypt_pending();
  void flush_tls();
  void save_tls_session();
  std::string session_key() const;   // resumption cache key
  std::string fallback_key() const;  // plaintext-fallback memory key

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
  bool reply_timer_deferred_ = false;  // armed once the pending bytes are sent
  bool in_session_call_ = false;
  std::optional<proto::Reply> failure_;
  Stage failure_stage_ = Stage::kConnect;
  uint64_t seen_wait_gen_ = 0;
  SendBatch inflight_;
  msghdr send_msg_{};
  Timer reply_timer_, send_timer_, idle_timer_, connect_timer_, tls_timer_;
  std::unique_ptr<TlsChannel> tls_;
  bool tls_handshaking_ = false;
  bool retry_plain_ = false;     // the next connect_next(): same host, no STARTTLS
  bool plaintext_only_ = false;  // this attempt is that plaintext retry
  bool tls_session_saved_ = false;
  bool send_is_wire_ = false;  // the send in flight is ciphertext from wire_
  std::string tls_summary_;
  std::string tls_error_;  // a TLS write failure, reported by tls_timer_
  std::string wire_;       // ciphertext being sent
  size_t wire_sent_ = 0;
  static constexpr size_t kRecvBuf = 16 * 1024;
  char rbuf_[kRecvBuf];
};

}  // namespace ringmail::engine
