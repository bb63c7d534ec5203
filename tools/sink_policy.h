/// sink_policy.h — what ringmail-sink answers: magic envelope local parts
/// (for integration tests) and seeded fault shares (for benchmarks).
///
/// Pure decisions, no I/O. A FaultPolicy belongs to one worker thread; the
/// SeenAddresses set behind --defer-first-attempt is shared by all workers
/// (a retry may arrive on another thread) and is the only locked structure.
///
/// Magic local parts (ASCII case-insensitive, any domain) take precedence
/// over the fault options, and a recipient with a magic local part is never
/// subject to the RCPT faults (--defer-first-attempt, --rcpt-*-ratio), so a
/// test that names one gets exactly the documented reply:
///   MAIL FROM  rejectsender        550 5.7.1 at MAIL
///   RCPT TO    reject              550 5.1.1 at RCPT
///   RCPT TO    defer               451 4.2.1 at RCPT
///   RCPT TO    full                452 4.2.2 at RCPT
///   RCPT TO    disconnect-in-data  close without a reply at end of data
///   RCPT TO    bigreject           552 5.3.4 at end of data
///   RCPT TO    rejectdata          554 5.7.1 at end of data
///   RCPT TO    deferdata           451 4.3.0 at end of data
/// At end of data the first of the last four present among the accepted
/// recipients wins, in the order listed. Without magic, one draw per
/// transaction picks drop, reject (550 5.7.1) or defer (451 4.3.0) with the
/// configured shares, and one draw per recipient picks reject (550 5.1.1) or
/// defer (451 4.2.1).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "proto/address.h"
#include "proto/smtp_server.h"
#include "tools/sink_options.h"

namespace ringmail::tools {

enum class Magic : uint8_t {
  kNone,
  kRejectSender,
  kReject,
  kDefer,
  kFull,
  kDisconnectInData,
  kBigReject,
  kRejectData,
  kDeferData,
};

/// The magic meaning of a local part, kNone for ordinary ones.
Magic classify_local_part(std::string_view local);

/// An answer to one decision. `text` is a static string.
struct Verdict {
  enum class Kind : uint8_t { kAccept, kRefuse, kDrop };
  Kind kind = Kind::kAccept;
  uint16_t code = 0;
  const char* text = "";

  bool accepted() const { return kind == Kind::kAccept; }
};

/// Recipient addresses already seen at RCPT, for --defer-first-attempt.
/// Any thread. Threat: a client sending millions of distinct addresses; at
/// kMaxEntries the set stops growing and unseen addresses are accepted
/// without a first deferral (counted in overflowed()).
class SeenAddresses {
 public:
  static constexpr size_t kMaxEntries = 1'000'000;

  /// True when local@domain (domain compared case-insensitively) was not
  /// seen before; it is remembered from now on.
  bool first_time(std::string_view local, std::string_view domain);
  uint64_t overflowed() const;

 private:
  mutable std::mutex mu_;
  std::unordered_set<std::string> set_;
  uint64_t overflowed_ = 0;
  std::string key_;  // scratch, under mu_
};

class FaultPolicy {
 public:
  /// `stream` separates the generators of different workers (the worker
  /// index). `seen` may be null when --defer-first-attempt is off.
  FaultPolicy(const SinkOptions& options, SeenAddresses* seen, uint64_t stream);

  Verdict on_mail(const proto::Mailbox& sender) const;
  Verdict on_rcpt(const proto::Mailbox& rcpt);
  Verdict on_message(const proto::Transaction& tx);

 private:
  double next_uniform();

  double defer_ratio_;
  double reject_ratio_;
  double drop_ratio_;
  double rcpt_defer_ratio_;
  double rcpt_reject_ratio_;
  SeenAddresses* seen_;
  uint64_t state_;
};

}  // namespace ringmail::tools
