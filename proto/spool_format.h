/// spool_format.h — the on-disk format of ringmail's spool segments.
///
/// A segment is a file: a 32-byte header, then records back to back.
///   header:  "RMSPOOL\0" | u32 version (1) | u32 shard | u64 segment number
///            | u64 creation time (Unix ms)
///   record:  u32 payload length | u8 type | u8 flags (0) | u16 reserved (0)
///            | u32 CRC-32C of (type, flags, reserved, payload) | payload
/// Integers are little-endian. Strings are u32 length + bytes.
///
/// Record types (payload layouts in spool_format.cc):
///   JOB     a batch's share on one shard: message body (once, whatever the
///           number of recipients), envelope, and every recipient with its
///           attempts, state and next retry time. Written at acceptance and
///           rewritten by compaction (the latest one of a job id wins).
///   STATE   recipients of a job became final, or were deferred with a new
///           attempt count and next retry time.
///   COMMIT  everything of this segment before `offset` was fsynced before
///           this record was written: corruption below the highest COMMIT
///           offset is damage to acknowledged data, never a torn tail.
///   RETIRE  a job is finished (or was never acknowledged): ignore it.
///
/// Threats: spool bytes are read back after crashes and disk faults, so the
/// scanner trusts nothing: every length is checked against the file and a
/// per-record cap before use, and a CRC mismatch stops the record. Addresses
/// and headers are length-prefixed, so no attacker-chosen byte can forge a
/// record boundary (the Exim spool-injection class).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto::spool {

inline constexpr char kMagic[8] = {'R', 'M', 'S', 'P', 'O', 'O', 'L', '\0'};
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kSegmentHeaderSize = 32;
inline constexpr size_t kRecordHeaderSize = 12;
inline constexpr uint32_t kMaxRecord = 1u << 30;

enum class RecordType : uint8_t { kJob = 1, kState = 2, kCommit = 3, kRetire = 4 };

enum class RcptState : uint8_t { kQueued = 0, kFinal = 1 };

struct RcptRecord {
  std::string_view address;  // local@domain (domain lower-case)
  uint16_t domain_off = 0;
  uint16_t attempts = 0;
  RcptState state = RcptState::kQueued;
  int64_t next_retry_ms = 0;  // Unix ms; 0 = as soon as possible
  std::string_view vars;      // personalised jobs: the recipient's variables
};

/// A JOB record. Personalised jobs set bit 1 of the flags word and append,
/// after the recipients: the signing domain (string), t= (u64) and one
/// variables string per recipient. Records without the bit decode as
/// before, so segments written by older versions stay readable.
struct JobRecord {
  uint64_t job_id = 0;
  bool sender_utf8 = false;
  uint32_t pool = 0;
  int64_t accepted_ms = 0;  // Unix ms
  std::string_view batch_id;
  std::string_view sender;
  std::string_view auth_user;
  /// Encoder only: bytes stored at the start of the body string (DKIM
  /// signatures made once at acceptance), so the stored body is exactly
  /// what goes on the wire; decoders return them inside `body`.
  std::string_view body_prefix;
  std::string_view body;         // CRLF-normalised message (or template)
  bool personalised = false;     // body is a template (proto/template.h)
  std::string_view dkim_domain;  // personalised: domain signing each copy, or empty
  int64_t dkim_time_s = 0;       // personalised: t= of those signatures
  std::vector<RcptRecord> rcpts;
};

enum class StateKind : uint8_t { kFinal = 1, kDeferred = 2 };

struct StateRecord {
  uint64_t job_id = 0;
  StateKind kind = StateKind::kFinal;
  uint16_t attempts = 0;      // kDeferred
  int64_t next_retry_ms = 0;  // kDeferred
  std::vector<uint32_t> rcpts;
};

uint32_t crc32c(uint32_t crc, std::span<const uint8_t> bytes);

void append_segment_header(std::string& out, uint32_t shard, uint64_t segment, int64_t now_ms);
void append_job(std::string& out, const JobRecord& job);
void append_state(std::string& out, const StateRecord& st);
void append_commit(std::string& out, uint64_t offset);
void append_retire(std::string& out, uint64_t job_id);

Result<JobRecord> decode_job(std::string_view payload);
Result<StateRecord> decode_state(std::string_view payload);

struct SegmentHeader {
  uint32_t shard = 0;
  uint64_t segment = 0;
  int64_t created_ms = 0;
};
Result<SegmentHeader> decode_segment_header(std::string_view bytes);

/// What scanning a segment found.
struct ScanResult {
  size_t good_end = 0;  // end of the last record that checked out
  uint64_t commit = 0;  // highest COMMIT offset seen
  size_t records = 0;
  bool damaged = false;      // a record failed its checks
  size_t damage_offset = 0;  // where
  std::string damage;        // what
  bool resynced = false;     // valid records were found after the damage
  size_t skipped = 0;        // bytes skipped to get there
};

/// Scans the records of a whole segment (after its header). `on_record`
/// gets (type, payload, offset) for every record whose checks pass and
/// returns false to stop. After damage the scanner looks for the next
/// position where a well-formed record starts (its CRC must match) and
/// carries on from there, so acknowledged records after a damaged one are
/// not lost; whether the damage is a torn tail or corruption of
/// acknowledged data is the caller's decision (compare with `commit`).
ScanResult scan_segment(std::string_view segment,
                        const std::function<bool(RecordType, std::string_view, size_t)>& on_record);

}  // namespace ringmail::proto::spool
