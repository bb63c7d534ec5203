/// spool.h — per-shard durable queue: append-only segment files written
/// through the shard's io_uring, group-committed, recovered at start.
///
/// Promise (spool.mode = "sync", the daemon's default): a batch is
/// acknowledged only after the fdatasync that covers its JOB records has
/// completed with success — and, for a new segment, after the spool
/// directory was fsynced too. An fsync is issued only once the writes it
/// must cover have completed (io_uring completes out of order, so the
/// spool waits for the write CQEs instead of trusting submission order).
/// Many batches share one fsync (group commit): everything appended while
/// one write+fsync is in flight goes in the next.
///
/// "async": acknowledged once written (the page cache survives a process
/// crash); fsync every spool.async_interval, so a power loss loses at most
/// that window. "off": nothing is written (Spool is not created).
///
/// What is written (proto/spool_format.h): one JOB record per batch share
/// on this shard (the body once, whatever the number of recipients), STATE
/// records for recipients that became final or were deferred (journaled
/// with the next group commit, never waited for: losing one costs a
/// duplicate delivery after a crash, never a loss), RETIRE for finished or
/// abandoned jobs, COMMIT markers telling recovery how far data is known to
/// be durable.
///
/// Disk errors: a failed write or fsync fails every batch waiting for it
/// (they are answered "spool unavailable", never acknowledged), marks the
/// spool unhealthy and abandons the segment: a failed fsync is never
/// retried as if it could succeed (after a writeback error Linux may report
/// success for data it dropped). A refused batch leaves nothing behind: the
/// segment is cut back (ftruncate) to where the failed group began, so a
/// record the disk did take (a short write before ENOSPC, data a failed
/// fsync may still have flushed) is never recovered; should the cut itself
/// fail, the refused jobs get RETIRE records once the disk works. Every
/// second a probe opens a new segment and fsyncs it (a failed probe's
/// segment is removed again); when that works the spool is healthy again,
/// and RETIRE records that could not be written meanwhile go first.
///
/// A batch refused because another shard's part failed is revoked on the
/// shards whose part was durable (revoke_job): its RETIRE is made durable
/// before the refusal is answered.
///
/// The directory: lock_spool_dir() takes an exclusive lock (flock on
/// spool.dir/lock) for the life of the engine, so a second engine on the
/// same directory refuses to start instead of recovering — and deleting —
/// the first one's live segments. A directory that other users may write
/// to, or a shard directory that is a symbolic link, is refused.
///
/// Space: a segment is deleted when it is not the current one and no
/// unfinished job has a record in it. Old segments whose live jobs are few
/// (below spool.compact_percent of those written there) are compacted: the
/// live jobs' current state is rewritten as new JOB records, a bounded
/// amount per loop iteration, so the shard never stalls; once those are
/// durable the old segment retires.
///
/// Faults for tests come through SpoolFaults (the process-wide plan): a
/// write or fsync can fail with a chosen errno, every Nth write can be
/// short.
/// Thread safety: one shard thread; SpoolFaults is atomic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/config.h"
#include "engine/metrics.h"
#include "engine/ring.h"
#include "engine/timer_wheel.h"

namespace ringmail::engine {

class Shard;
struct Job;

/// Checks spool.dir (creating it, mode 0700, when missing) and takes its
/// exclusive lock. Returns the lock's descriptor; the lock lasts until it
/// is closed. Errors say what is wrong and what to do.
[[nodiscard]] Result<int> lock_spool_dir(const SpoolConfig& cfg);

/// Process-wide fault plan for the spool's I/O (tests only).
struct SpoolFaults {
  std::atomic<int> write_errno{0};             // every write fails with this errno while set
  std::atomic<int> fsync_errno{0};             // every fsync fails with this errno while set
  std::atomic<int> fsync_fail_once{0};         // the next fsync fails with this errno, then cleared
  std::atomic<uint32_t> short_write_every{0};  // every Nth write is cut in half
  std::atomic<uint64_t> writes{0};
  static SpoolFaults& instance();
};

/// A recovered recipient that is not final yet.
struct RecoveredRcpt {
  uint32_t idx;
  int64_t next_retry_ms;  // wall clock; 0 = now
};

struct RecoveredJob {
  Job* job;
  std::vector<RecoveredRcpt> rcpts;
};

struct SpoolStats {
  uint64_t segments = 0;
  uint64_t bytes = 0;
  uint64_t commits = 0;
  uint64_t compacted_jobs = 0;
  uint64_t retired_segments = 0;
  uint64_t errors = 0;
  FsyncHistogram fsync;  // data fsyncs that succeeded, by latency (/metrics)
};

class Spool {
 public:
  explicit Spool(Shard& shard);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  /// Reads this shard's segments (and those of shards beyond the current
  /// count that map to it), rebuilds unfinished jobs and returns them.
  /// Damage inside acknowledged data is reported in the log and counted,
  /// never dropped silently; a torn tail is cut.
  Result<std::vector<RecoveredJob>> recover();
  /// Opens a fresh segment for writing.
  Result<void> start();
  /// Rewrites the recovered jobs into the new segment; the old segments
  /// are deleted once that is durable. Call after start().
  void adopt_recovered(const std::vector<RecoveredJob>& jobs);
  /// Damaged records or segments found by recover().
  size_t recovered_damage() const { return recovered_damage_; }

  /// Writes a job's JOB record; `done(true)` runs once it is durable (sync)
  /// or written (async), `done(false)` if the spool failed it.
  void append_job(Job* job, std::function<void(bool)> done);
  void journal_final(Job* job, const std::vector<uint32_t>& idx);
  void journal_deferred(Job* job, const std::vector<uint32_t>& idx, uint16_t attempts,
                        int64_t next_retry_ms);
  /// The job is finished (or was never acknowledged): its segments may go.
  void retire_job(Job* job);
  /// A durable job whose batch was refused after all: retires it and calls
  /// `done(true)` once the RETIRE is durable, `done(false)` when the spool
  /// cannot make it durable now (it is written once the disk works).
  void revoke_job(Job* job, std::function<void(bool)> done);

  /// Once per loop iteration: start the next write/fsync, probe health,
  /// compact a little.
  void flush();
  bool healthy() const { return healthy_; }
  /// Nothing buffered or in flight.
  bool idle() const;
  /// Clean shutdown: a last COMMIT record, fsynced (blocking is fine here).
  void close();
  const SpoolStats& stats() const { return stats_; }
  size_t segment_count() const { return segments_.size(); }

 private:
  struct Segment {
    uint64_t number = 0;
    std::string path;
    uint64_t size = 0;
    uint64_t jobs_written = 0;
    bool compacting = false;
    std::unordered_set<Job*> live;  // unfinished jobs with a record here
  };
  struct Waiter {
    std::function<void(bool)> done;
    Job* job = nullptr;  // append_job's job: refused if the group fails
  };
  struct Op final : Completion {
    Spool* spool = nullptr;
    void (Spool::*fn)(int res) = nullptr;
    void complete(int res, uint32_t) override { (spool->*fn)(res); }
  };
  enum class Phase : uint8_t { kIdle, kWriting, kSyncing, kSyncingDir };

  Result<void> open_segment();
  void note_record(Job* job);
  void start_write();
  void submit_write();
  void on_write(int res);
  void on_fsync(int res);
  void on_dir_fsync(int res);
  void group_done(bool ok);
  void fail(const std::string& what, int err);
  void maybe_retire(uint64_t seg);
  /// After a failed group: cuts the segment back to where the group began.
  void cut_failed_group(const std::vector<Waiter>& refused);
  void compact_some();
  void snapshot(Job* job, std::string& out);
  std::string dir_for(uint32_t shard) const;

  Shard& shard_;
  const SpoolConfig& cfg_;
  std::string dir_;
  int dir_fd_ = -1;
  int fd_ = -1;
  uint64_t seg_ = 0;  // current segment number
  uint64_t next_job_id_ = 1;
  std::map<uint64_t, Segment> segments_;
  Phase phase_ = Phase::kIdle;
  bool healthy_ = true;
  bool probing_ = false;         // a probe segment is being written after a failure
  bool header_pending_ = false;  // the new segment's header goes first in the next write
  bool seg_dead_ = false;
  bool dir_sync_needed_ = false;
  bool sync_due_ = false;       // async mode: fsync at the next chance
  bool unsynced_ = false;       // async mode: written but not fsynced
  uint64_t committed_ = 0;      // bytes of the current segment known durable
  uint64_t commit_marked_ = 0;  // last COMMIT offset written
  std::string pending_;
  std::vector<Job*> pending_jobs_;  // jobs with records in pending_ (segment accounting)
  std::vector<Waiter> pending_waiters_;
  std::vector<std::string> obsolete_;  // segments read by recovery
  size_t recovered_damage_ = 0;
  std::string writing_;
  size_t written_ = 0;
  uint64_t write_off_ = 0;
  std::vector<Waiter> writing_waiters_;
  bool group_unacked_ = false;       // the group in flight has not been answered yet
  std::vector<Job*> writing_new_;    // jobs whose first record in seg_ is in that group
  std::vector<uint64_t> unretired_;  // RETIRE records owed since the spool failed
  std::vector<Job*> compact_queue_;
  std::vector<std::pair<Job*, uint64_t>> snapshot_done_;  // job, segment of its snapshot
  Op write_op_, fsync_op_, dir_op_;
  Timer probe_timer_;
  Timer async_timer_;
  bool probe_due_ = false;
  bool error_logged_ = false;
  SpoolStats stats_;
  std::chrono::steady_clock::time_point fsync_started_{};
  static void on_probe(void* self);
  static void on_async(void* self);
};

}  // namespace ringmail::engine
