/// queue_summary.h — `ringmail-ctl queue`: the reply of the "list" control
/// command (docs/protocol.md) summarised per destination for operators,
/// in the spirit of Postfix's `postqueue -p`, or as JSON for scripts.
///
/// parse_listing() reads the daemon's JSON with a small bounded reader
/// (depth and size checked; anything unexpected is an error naming what),
/// so a reply from a newer daemon with extra fields still reads.
/// Not part of the daemon.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::tools {

/// One destination (recipient domain and egress pool) of the listing,
/// with its egress sources folded together.
struct DestinationRow {
  std::string domain;
  std::string pool;
  uint64_t shard = 0;
  uint64_t queued = 0;
  uint64_t in_flight = 0;
  uint64_t deferred = 0;
  uint64_t connections = 0;
  uint64_t max_connections = 0;  // sum over the pool's sources (adaptive limits)
  bool paused = false;
  uint64_t backoff_ms = 0;            // longest remaining backoff of its sources
  bool held = false;                  // every source holds new transactions
  std::optional<uint64_t> oldest_ms;  // age of the oldest queued or deferred recipient
  std::string last_error;             // latest deferral reply; empty: none
  std::optional<uint64_t> last_error_age_ms;
  std::optional<uint64_t> next_retry_ms;  // until the earliest retry is due

  uint64_t mail() const { return queued + in_flight + deferred; }
  /// Worth showing without --all: mail waits, or the destination is paused
  /// or backing off.
  bool active() const { return mail() > 0 || paused || backoff_ms > 0; }
};

/// Reads a "list" reply. Errors: not JSON, not ok, or fields of the
/// wrong type.
Result<std::vector<DestinationRow>> parse_listing(std::string_view json);

/// The table: a header, one line per destination (the most mail first),
/// each followed by an indented line with its last deferral when it has
/// deferred mail, and a totals line. Rows that are not active() are left
/// out unless `all`. Nothing to show: "Mail queue is empty\n".
std::string format_queue(std::vector<DestinationRow> rows, bool all);

/// The same selection and order as JSON:
/// {"destinations":[...],"totals":{...}} and a newline.
std::string format_queue_json(std::vector<DestinationRow> rows, bool all);

/// "0s", "59s", "4m58s", "2h05m", "3d04h": whole units, truncated.
std::string short_duration(uint64_t ms);

}  // namespace ringmail::tools
