/// dsn.h — RFC 3464 delivery status notifications for bounced recipients.
///
/// With bounces.dsn on, every final failure of a message with a non-null
/// envelope sender is collected per message for bounces.dsn_delay, then one
/// multipart/report (proto/bounce.h) listing those recipients is queued to
/// the envelope sender from the null reverse-path, like any other batch
/// (it gets its own events, and is retried and expired like any mail).
/// Messages from the null reverse-path never cause a report (no loops).
/// At most kMaxPerReport recipients are itemised per report; the rest of
/// a flood waits for the next one.
/// Thread safety: one shard thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/message.h"
#include "engine/timer_wheel.h"
#include "proto/bounce.h"
#include "proto/smtp_reply.h"

namespace ringmail::engine {

class Shard;

class DsnCollector {
 public:
  explicit DsnCollector(Shard& shard) : shard_(shard) {}
  ~DsnCollector();

  /// `last_attempt_wall_ms`: when the recipient was last tried (wall
  /// clock, ms since the epoch; the report's Last-Attempt-Date), 0 when it
  /// never was or the time is not known.
  void bounced(const Message& msg, std::string_view recipient, const proto::Reply& reply,
               std::string_view remote_mta, int64_t last_attempt_wall_ms);
  uint64_t reports_queued() const { return reports_; }

  static constexpr size_t kMaxPerReport = 1000;

 private:
  struct Pending {
    explicit Pending(DsnCollector* o);
    DsnCollector* owner;
    MessageRef msg;
    std::vector<proto::DsnRecipient> rcpts;
    Timer timer;
  };
  static void on_timer(void* p);
  void flush(Pending* p);

  Shard& shard_;
  std::unordered_map<const Message*, std::unique_ptr<Pending>> pending_;
  uint64_t reports_ = 0;
};

}  // namespace ringmail::engine
