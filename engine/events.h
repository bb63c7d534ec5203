/// events.h — delivery events: one JSON object per outcome.
///
/// Every recipient outcome (delivered, deferred, bounced, dropped) becomes
/// one JSON line with at least: type, ts, batch, recipient, code,
/// enhanced_code, response, peer, attempt; a destination entering or
/// leaving backoff (backoff, resume) becomes one too (docs/protocol.md
/// lists every field of each). Lines go
///   - to the event file (each shard appends its own buffered lines with
///     one io_uring write per loop iteration to an O_APPEND file, so lines
///     never interleave),
///   - to subscribers: embedding callbacks run on the shard thread that
///     produced the event; socket subscribers receive them through the
///     ingest shard.
/// The file is reopened by name for log rotation (SIGHUP, `ringmail-ctl
/// reopen-logs`): each shard's EventLog switches to the new file between
/// two writes (EventLog::reopen), so a line is never split, lost or
/// written twice.
/// Thread safety: an EventLog belongs to one shard; an EventFile is shared
/// by every shard's EventLog and closed by the last one to let it go.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/delivery_session.h"
#include "engine/ring.h"
#include "proto/result.h"

namespace ringmail::engine {

/// Recipient outcomes (delivered, deferred, bounced, dropped — the last
/// three but deferred are final) and destination state changes.
enum class EventType : uint8_t { kDelivered, kDeferred, kBounced, kDropped, kBackoff, kResume };
std::string_view event_type_name(EventType t);

/// A delivery event as subscribers see it. Views are valid only during the
/// callback.
struct EventView {
  EventType type = EventType::kDeferred;
  std::string_view batch;
  std::string_view recipient;
  std::string_view sender;
  uint16_t code = 0;
  std::string_view enhanced_code;
  std::string_view response;
  std::string_view peer;
  std::string_view mx;
  uint32_t attempt = 0;
  uint64_t origin = 0;  // ingest connection the batch came from (0: API)
  std::string_view failure_class;
  std::string_view domain;  // kBackoff/kResume: the destination
  std::string_view json;    // the complete JSON object, without newline
};

using EventCallback = std::function<void(const EventView&)>;

/// The facts of one outcome, before formatting.
struct OutcomeRecord {
  EventType type;
  const Message* msg;
  std::string_view recipient;
  const proto::Reply* reply;
  Stage stage;
  bool unknown;
  std::string_view peer;  // "ip:port" or ""
  std::string_view mx;    // the MX host (or configured host) that answered, or ""
  std::string_view tls;   // "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" in plaintext
  uint32_t attempt;
  int64_t wall_ms;
  int64_t queue_ms;  // since the batch was accepted
  uint32_t shard;
  std::string_view note;           // extra reason (e.g. "expired after 5d"), may be empty
  std::string_view failure_class;  // proto::failure_class_name, empty when delivered
};

/// A destination entering or leaving backoff.
struct DestinationRecord {
  EventType type;  // kBackoff or kResume
  std::string_view domain;
  std::string_view pool;
  std::string_view source;
  std::string_view reason;  // what triggered the backoff
  int64_t until_wall_ms;    // kBackoff: when it ends
  uint32_t max_connections;
  bool hold;  // kBackoff: new transactions wait until it ends
  int64_t wall_ms;
  uint32_t shard;
};

void format_destination_json(std::string& out, const DestinationRecord& rec);

/// Formats `rec` as one JSON object (no newline) appended to `out`.
void format_event_json(std::string& out, const OutcomeRecord& rec);

/// The event file, opened for appending (O_APPEND: the kernel places each
/// write whole at the end, so the lines of different shards never
/// interleave). Any thread; closed when the last owner lets go.
class EventFile {
 public:
  /// Opens (creating, mode 0640) `path`. Errors: open(2) failed.
  static Result<std::shared_ptr<EventFile>> open(const std::string& path);
  ~EventFile();
  EventFile(const EventFile&) = delete;
  EventFile& operator=(const EventFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  EventFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

class EventLog final : public Completion {
 public:
  /// `file`: the shared event file, or null for none.
  EventLog(Ring& ring, std::shared_ptr<EventFile> file);
  ~EventLog();

  void append_line(std::string_view json);
  /// Starts a write of buffered lines if none is in flight, and retires a
  /// previous file whose lines are all written. Call once per loop
  /// iteration.
  void flush();
  bool idle() const { return !writing_ && files_.size() == 1 && files_.front().pending.empty(); }
  uint64_t write_errors() const { return write_errors_; }
  /// Switches to `file`: every line appended before this call goes to the
  /// current file (after the write in flight, if any), every later one to
  /// `file`. `written` runs on this shard, from flush(), once the lines
  /// for the previous file are written (or failed and counted). Only
  /// valid when the log was created with a file.
  void reopen(std::shared_ptr<EventFile> file, std::function<void()> written);

  void complete(int res, uint32_t flags) override;

 private:
  /// A file and the lines waiting for it. The front one is written; the
  /// back one receives new lines; more than one after reopen().
  struct Target {
    std::shared_ptr<EventFile> file;
    std::string pending;
    std::function<void()> written;  // runs when this target is retired
  };
  Ring& ring_;
  std::deque<Target> files_;  // never empty
  std::string writing_buf_;   // in flight to files_.front()
  size_t written_ = 0;
  bool writing_ = false;
  uint64_t write_errors_ = 0;
  bool error_logged_ = false;
};

}  // namespace ringmail::engine
