/// failpoint.h — named places where crash tests kill the process.
///
/// RINGMAIL_FAILPOINT="name:N" in the environment makes the Nth time the
/// process reaches failpoint("name") raise SIGKILL there, so the crash-loop
/// test can kill ringmaild exactly between a spool write and its fsync,
/// after the fsync and before the acknowledgement, in the middle of a batch,
/// after a remote 250 and before its journal record, or mid-compaction.
/// Without the variable a failpoint is one predictable branch.
/// Points: spool_after_write, spool_after_fsync, ingest_batch,
/// delivered_before_journal, compaction.
#pragma once

namespace ringmail::engine {

void failpoint_hit(const char* name);
extern bool g_failpoints_armed;

inline void failpoint(const char* name) {
  if (g_failpoints_armed) [[unlikely]] {
    failpoint_hit(name);
  }
}

}  // namespace ringmail::engine
