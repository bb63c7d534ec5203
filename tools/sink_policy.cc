// ringmail-sink verdicts (see sink_policy.h).
#include "tools/sink_policy.h"

namespace ringmail::tools {
namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view lower_b) {
  if (a.size() != lower_b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower_b[i]) {
      return false;
    }
  }
  return true;
}

constexpr Verdict refuse(uint16_t code, const char* text) {
  return Verdict{Verdict::Kind::kRefuse, code, text};
}

constexpr Verdict kAccept{};
constexpr Verdict kDrop{Verdict::Kind::kDrop, 0, ""};
constexpr Verdict kRejectSender = refuse(550, "5.7.1 Error: sender rejected");
constexpr Verdict kRcptReject = refuse(550, "5.1.1 Error: recipient rejected");
constexpr Verdict kRcptDefer = refuse(451, "4.2.1 Error: mailbox temporarily unavailable");
constexpr Verdict kRcptFull = refuse(452, "4.2.2 Error: mailbox full");
constexpr Verdict kRcptGreylist = refuse(451, "4.7.1 Error: greylisted, try again later");
constexpr Verdict kBigReject = refuse(552, "5.3.4 Error: message too big for recipient");
constexpr Verdict kRejectData = refuse(554, "5.7.1 Error: message rejected");
constexpr Verdict kRejectRatio = refuse(550, "5.7.1 Error: message rejected");
constexpr Verdict kDeferData = refuse(451, "4.3.0 Error: temporary failure, try again later");

}  // namespace

Magic classify_local_part(std::string_view local) {
  struct Name {
    const char* text;
    Magic magic;
  };
  static constexpr Name kNames[] = {
      {"rejectsender", Magic::kRejectSender},
      {"reject", Magic::kReject},
      {"defer", Magic::kDefer},
      {"full", Magic::kFull},
      {"disconnect-in-data", Magic::kDisconnectInData},
      {"bigreject", Magic::kBigReject},
      {"rejectdata", Magic::kRejectData},
      {"deferdata", Magic::kDeferData},
  };
  if (local.size() < 4 || local.size() > 18) {  // the shortest and longest names
    return Magic::kNone;
  }
  for (const Name& n : kNames) {
    if (iequals(local, n.text)) {
      return n.magic;
    }
  }
  return Magic::kNone;
}

bool SeenAddresses::first_time(std::string_view local, std::string_view domain) {
  std::lock_guard<std::mutex> lock(mu_);
  key_.assign(local);
  key_.push_back('@');
  for (char c : domain) {
    key_.push_back(lower(c));
  }
  if (set_.find(key_) != set_.end()) {
    return false;
  }
  if (set_.size() >= kMaxEntries) {
    ++overflowed_;
    return false;
  }
  set_.insert(key_);
  return true;
}

uint64_t SeenAddresses::overflowed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overflowed_;
}

FaultPolicy::FaultPolicy(const SinkOptions& options, SeenAddresses* seen, uint64_t stream)
    : defer_ratio_(options.defer_ratio),
      reject_ratio_(options.reject_ratio),
      drop_ratio_(options.drop_ratio),
      rcpt_defer_ratio_(options.rcpt_defer_ratio),
      rcpt_reject_ratio_(options.rcpt_reject_ratio),
      seen_(options.defer_first_attempt ? seen : nullptr),
      state_(options.seed ^ (stream * 0xD1B54A32D192ED03ull)) {}

// splitmix64: tiny, fast and good enough to pick shares.
double FaultPolicy::next_uniform() {
  state_ += 0x9E3779B97F4A7C15ull;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

Verdict FaultPolicy::on_mail(const proto::Mailbox& sender) const {
  return classify_local_part(sender.local) == Magic::kRejectSender ? kRejectSender : kAccept;
}

Verdict FaultPolicy::on_rcpt(const proto::Mailbox& rcpt) {
  switch (classify_local_part(rcpt.local)) {
    case Magic::kReject:
      return kRcptReject;
    case Magic::kDefer:
      return kRcptDefer;
    case Magic::kFull:
      return kRcptFull;
    case Magic::kNone:
    case Magic::kRejectSender:  // not magic as a recipient
      break;
    default:
      return kAccept;  // magic at end of data: never faulted here
  }
  if (seen_ != nullptr && seen_->first_time(rcpt.local, rcpt.domain)) {
    return kRcptGreylist;
  }
  if (rcpt_reject_ratio_ > 0 || rcpt_defer_ratio_ > 0) {
    double u = next_uniform();
    if (u < rcpt_reject_ratio_) {
      return kRcptReject;
    }
    if (u < rcpt_reject_ratio_ + rcpt_defer_ratio_) {
      return kRcptDefer;
    }
  }
  return kAccept;
}

Verdict FaultPolicy::on_message(const proto::Transaction& tx) {
  Magic best = Magic::kNone;
  for (const proto::Recipient& r : tx.recipients) {
    Magic m = classify_local_part(r.mailbox.local);
    // Data-phase magic values are declared in precedence order.
    if (m >= Magic::kDisconnectInData && (best == Magic::kNone || m < best)) {
      best = m;
    }
  }
  switch (best) {
    case Magic::kDisconnectInData:
      return kDrop;
    case Magic::kBigReject:
      return kBigReject;
    case Magic::kRejectData:
      return kRejectData;
    case Magic::kDeferData:
      return kDeferData;
    default:
      break;
  }
  if (drop_ratio_ > 0 || reject_ratio_ > 0 || defer_ratio_ > 0) {
    double u = next_uniform();
    if (u < drop_ratio_) {
      return kDrop;
    }
    if (u < drop_ratio_ + reject_ratio_) {
      return kRejectRatio;
    }
    if (u < drop_ratio_ + reject_ratio_ + defer_ratio_) {
      return kDeferData;
    }
  }
  return kAccept;
}

}  // namespace ringmail::tools
