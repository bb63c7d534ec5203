/// metrics.h — what /metrics reports (docs/http.md lists every metric) and
/// how it is gathered: per shard, on demand, never through shared counters.
///
///   - Each shard keeps its own counts: ShardStats' relaxed atomics (read
///     from any thread) and, here, DestinationCounters (outcomes per
///     recipient domain and egress pool, touched only by the shard).
///   - A scrape (collect_metrics, from shard 0) posts one message to every
///     shard; each fills its ShardSnapshot on its own thread (queue depth,
///     connections, DNS cache, spool, its destination counts) and posts
///     back. The last reply renders the text on shard 0. Nothing is added
///     to the delivery path but one hash lookup per outcome.
///   - Label cardinality is bounded twice: a shard tracks at most
///     DestinationCounters::kMaxTracked destinations (outcomes of further
///     ones count toward their pool's "other"), and MetricsExporter gives
///     at most http.metrics_destinations (domain, pool) pairs a label of
///     their own, chosen by volume and then kept for the process's life,
///     so a series never disappears or jumps; everything else is
///     domain="other". A destination labelled after a scrape already
///     exposed part of its count in "other" starts its own series from
///     what "other" had not yet shown, so both series only ever grow.
///
/// Thread safety: DestinationCounters and ShardSnapshot filling belong to
/// one shard; MetricsExporter and collect_metrics to shard 0.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/events.h"

namespace ringmail::engine {

class Shard;
class Runtime;

/// Entry points of batches, for ringmail_ingest_batches_total{source}.
enum class BatchSource : uint8_t { kSocket = 0, kHttp = 1, kSubmission = 2 };
inline constexpr size_t kBatchSources = 3;
inline constexpr size_t kAckStatuses = 4;  // proto::AckStatus values

/// Recipient outcomes counted per destination.
enum class OutcomeKind : uint8_t { kDelivered = 0, kDeferred = 1, kBounced = 2 };
inline constexpr size_t kOutcomeKinds = 3;
using OutcomeCounts = std::array<uint64_t, kOutcomeKinds>;

/// Upper bounds (seconds) of the spool fsync latency histogram buckets;
/// the last bucket (+Inf) is implicit.
inline constexpr std::array<double, 12> kFsyncBucketBounds = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

struct FsyncHistogram {
  std::array<uint64_t, kFsyncBucketBounds.size() + 1> buckets{};  // not cumulative
  uint64_t count = 0;
  double sum_seconds = 0;
  void observe(double seconds);
  void add(const FsyncHistogram& o);
};

/// One shard's outcome counts per (domain, pool). Shard thread only.
class DestinationCounters {
 public:
  /// Destinations tracked per shard. Threat: batches to millions of
  /// distinct domains would otherwise grow this map without bound.
  static constexpr size_t kMaxTracked = 4096;

  /// Counts a recipient event; other event types are ignored.
  /// `recipient` is the address (its domain after the last '@').
  void count(std::string_view recipient, uint32_t pool, EventType type);

  struct Row {
    std::string domain;
    uint32_t pool;
    OutcomeCounts counts;
  };
  /// Appends every tracked destination to `out`.
  void snapshot(std::vector<Row>* out) const;
  /// Outcomes of destinations beyond kMaxTracked, per pool.
  const std::vector<OutcomeCounts>& untracked() const { return untracked_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Per domain: counts per pool index (pools are few).
  std::unordered_map<std::string, std::vector<OutcomeCounts>, Hash, std::equal_to<>> by_domain_;
  std::vector<OutcomeCounts> untracked_;
};

/// What one shard reports to a scrape.
struct ShardSnapshot {
  std::vector<DestinationCounters::Row> destinations;
  std::vector<OutcomeCounts> untracked;
  uint64_t ready = 0;          // recipients queued, waiting for a transaction
  uint64_t retry_waiting = 0;  // recipients deferred, waiting for their retry time
  uint64_t in_flight = 0;      // recipients in transactions
  uint64_t connections = 0;    // SMTP client connections, open or being set up
  uint64_t connecting = 0;     // of those: being set up
  uint64_t dns_entries = 0;
  uint64_t dns_hits = 0;
  uint64_t dns_queries = 0;
  uint64_t spool_bytes = 0;
  FsyncHistogram fsync;
};

/// Fills `out` from `shard`'s state. On that shard's thread.
void snapshot_shard(Shard& shard, ShardSnapshot* out);

/// Gathers every shard's snapshot and calls `done` on shard 0 once the
/// last one arrived. Shard 0's thread.
void collect_metrics(Shard& shard0, std::function<void(std::vector<ShardSnapshot>)> done);

/// Renders snapshots in the Prometheus text exposition format 0.0.4,
/// keeping the destination label assignment between scrapes. Shard 0.
class MetricsExporter {
 public:
  explicit MetricsExporter(Runtime& rt);
  std::string render(const std::vector<ShardSnapshot>& shards);

 private:
  using Key = std::pair<uint32_t, std::string>;  // (pool, domain)
  struct Label {
    OutcomeCounts base{};  // counted before the label existed: reported in "other"
  };
  /// Gives new destinations a label while there is room.
  void assign_labels(const std::map<Key, OutcomeCounts>& merged, std::vector<OutcomeCounts>* other);

  Runtime& rt_;
  std::map<Key, Label> labels_;
  std::vector<OutcomeCounts> other_shown_;  // per pool: "other" at the last scrape
};

/// Appends `s` escaped as a Prometheus label value (\\, \", \n).
void append_label_value(std::string& out, std::string_view s);

}  // namespace ringmail::engine
