/// sink_connection.h — one SMTP client of ringmail-sink: a ServerSession
/// driven over a TCP socket on the worker's io_uring.
///
/// I/O discipline (STYLE.md item 6): one recv always armed into a 16 KiB
/// buffer (paused only while that buffer is full of input the session cannot
/// take yet: a delayed reply, or a client that does not read its replies);
/// at most one send in flight, later replies queue behind it; every SQE is
/// submitted by the worker's loop in one batch. Per message the connection
/// allocates nothing itself: replies are copied into two reused buffers.
///
/// Closing: after the last reply (221, 421, or none for a dropped
/// transaction), or at the client's EOF, the connection sends what is
/// queued, shuts down its write side and reads to EOF for at most kLinger,
/// so the client reads the reply rather than a reset; then it cancels what
/// is outstanding, waits for those CQEs, closes the socket and retires
/// itself to the worker, which destroys it after the completion batch. A
/// reset or a send error ends it at once.
///
/// Lifetime and thread: created and owned by its Worker; worker thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/ring.h"
#include "engine/timer_wheel.h"
#include "proto/smtp_server.h"
#include "tools/sink_policy.h"

namespace ringmail::tools {

class Worker;

class SinkConnection {
 public:
  /// Threat: a client pipelining commands without reading the replies. With
  /// this many reply bytes queued the connection stops feeding the session
  /// (and so, once its input buffer is full, stops reading).
  static constexpr size_t kMaxQueuedOutput = 64 * 1024;
  static constexpr size_t kRecvBuffer = 16 * 1024;

  /// `admitted` false: the connection is over --max-connections and gets
  /// only the 421 greeting.
  SinkConnection(Worker& worker, int fd, bool admitted);
  ~SinkConnection();
  SinkConnection(const SinkConnection&) = delete;
  SinkConnection& operator=(const SinkConnection&) = delete;

  /// Sends the greeting (now or after --greeting-delay-ms) and starts reading.
  void start();
  /// Ends the connection now, without another reply (worker shutdown, a
  /// client that went away). Safe to call in any state.
  void finish();

 private:
  friend class Worker;  // intrusive list links

  struct Op final : engine::Completion {
    SinkConnection* conn = nullptr;
    void (SinkConnection::*fn)(int res, uint32_t flags) = nullptr;
    void complete(int res, uint32_t flags) override;
  };
  enum class State : uint8_t {
    kOpen,      // the session runs
    kClosing,   // the session is over; sending the last replies
    kDraining,  // write side shut down; reading to EOF
    kDead,      // waiting for outstanding CQEs, then retired
  };

  void on_recv(int res, uint32_t flags);
  void on_send(int res, uint32_t flags);
  void drive();
  void decide();
  void finish_message(const Verdict& v);
  void answer(const Verdict& v);
  [[nodiscard]] bool dump_message(const proto::Transaction& tx);
  void take_output();
  void take_ehlo_reply_without_size();
  void flush();
  void arm_recv();
  void touch_idle();
  void begin_close();
  void release_session_slot();
  void maybe_retire();
  static void on_idle_timer(void* self);
  static void on_reply_timer(void* self);
  static void on_greeting_timer(void* self);

  Worker& worker_;
  int fd_;
  State state_ = State::kOpen;
  bool admitted_;
  bool recv_armed_ = false;
  bool sending_ = false;
  bool delayed_ = false;         // an end-of-data reply waits for reply_timer_
  bool output_blocked_ = false;  // queued_ reached kMaxQueuedOutput
  bool peer_eof_ = false;        // the client shut down its side
  bool retired_ = false;
  uint8_t ops_ = 0;  // outstanding recv and send SQEs
  Verdict pending_;  // the delayed end-of-data verdict
  proto::ServerSession session_;
  Op recv_op_;
  Op send_op_;
  engine::Timer idle_timer_;      // idle timeout, then the linger bound while closing
  engine::Timer reply_timer_;     // --delay-ms
  engine::Timer greeting_timer_;  // --greeting-delay-ms
  std::string queued_;            // replies waiting for the send in flight
  std::string inflight_;          // the send in flight
  size_t sent_ = 0;               // bytes of inflight_ already sent
  size_t in_begin_ = 0;           // unconsumed input is in_[in_begin_, in_end_)
  size_t in_end_ = 0;
  SinkConnection* prev_ = nullptr;
  SinkConnection* next_ = nullptr;
  char in_[kRecvBuffer];
};

}  // namespace ringmail::tools
