/// suppression.h — recipients ringmail will not send to: addresses that
/// hard-bounced as invalid (5.1.x, see suppresses()), addresses a batch
/// reported as unsubscribed, and addresses an operator added; each with a
/// reason and an expiry ([suppression] in engine/config.h).
///
/// Keys: the address as the runtime keeps recipients: local part exactly as
/// given, '@', domain lower-cased (SuppressionList::key()).
///
/// Thread safety and why this shape: lookups happen at batch acceptance
/// (shard 0 or an embedding thread, up to max_recipients per batch), and
/// additions come from bounces on any shard, rarely. The map is split into
/// kStripes stripes by address hash, each under its own shared_mutex:
/// a lookup takes one stripe's shared lock (uncontended reader locks are a
/// couple of atomic operations, and writers touch one stripe for a few
/// hundred nanoseconds), and an empty list costs one relaxed atomic load.
/// An RCU-style copy-on-write map would make reads free of atomics but
/// every bounce would copy a list that may hold millions of entries; a
/// single mutex would make every shard's bounces wait for a million-lookup
/// batch. Stripes are cache-line aligned so readers of different stripes
/// never share a line.
///
/// Persistence (SuppressionConfig::file; memory only when empty): an
/// append-only log of "+" (add) and "-" (remove) lines. Mutations append to
/// an in-memory pending buffer (under the stripe lock, so the log order of
/// one address is its mutation order); flush() writes it with one write(2)
/// and fdatasync — the owner calls it periodically and at shutdown, and
/// ringmail-ctl edits flush at once. open() replays the log (a torn last
/// line is ignored; malformed lines are skipped and counted), drops expired
/// entries and compacts: the live entries are written to "<file>.tmp",
/// fsynced, renamed over the file, and the directory is fsynced, so a crash
/// at any point leaves either the old or the new file whole. flush()
/// compacts again when the log holds more than twice the live entries.
///
/// Limits: Limits::max_entries (additions beyond it are refused and
/// counted), notes capped at Limits::max_note bytes, pending log bytes
/// beyond kMaxPendingBytes are flushed by the mutating thread.
/// Diagnostics: open() and flush() return errors naming the file; stats()
/// counts refusals, skipped log lines and write failures.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/clock.h"
#include "engine/config.h"
#include "proto/result.h"
#include "proto/smtp_reply.h"

namespace ringmail::engine {

enum class SuppressionReason : uint8_t {
  kInvalidRecipient = 1,  // a 5.1.x bounce (SuppressionConfig::invalid_ttl)
  kUnsubscribed = 2,      // a batch listed it (SuppressionConfig::unsubscribe_ttl)
  kManual = 3,            // an operator added it
};
/// "invalid_recipient", "unsubscribed", "manual" (ACK texts, events, ctl).
std::string_view suppression_reason_name(SuppressionReason r);
std::optional<SuppressionReason> parse_suppression_reason(std::string_view name);

struct SuppressionEntry {
  std::string address;
  SuppressionReason reason = SuppressionReason::kManual;
  int64_t added_ms = 0;    // wall clock (ms since the epoch)
  int64_t expires_ms = 0;  // wall clock; 0 = never
  std::string note;        // e.g. "550 5.1.1 no such user (batch b-17)"
};

struct SuppressionHit {
  SuppressionReason reason;
  int64_t expires_ms;  // 0 = never
};

class SuppressionList {
 public:
  static constexpr size_t kStripes = 64;
  static constexpr size_t kMaxPendingBytes = 4u << 20;

  struct Limits {
    /// Memory: about 150 bytes per entry; 10M entries ~ 1.5 GB.
    size_t max_entries = 10'000'000;
    size_t max_note = 200;
  };

  struct Stats {
    uint64_t entries = 0;
    uint64_t refused_full = 0;    // additions refused at max_entries
    uint64_t skipped_lines = 0;   // malformed log lines ignored at open()
    uint64_t write_failures = 0;  // flush()/compact() errors
    uint64_t compactions = 0;
  };

  /// Opens the list: replays and compacts SuppressionConfig::file when set
  /// (creating it when missing). `clock` supplies wall time for expiry and
  /// must outlive the list. Errors: the file cannot be read, created or
  /// rewritten (the message names it).
  static Result<std::unique_ptr<SuppressionList>> open(const SuppressionConfig& config,
                                                       const Clock& clock, Limits limits);
  static Result<std::unique_ptr<SuppressionList>> open(const SuppressionConfig& config,
                                                       const Clock& clock) {
    return open(config, clock, Limits{});
  }
  ~SuppressionList();

  /// [suppression] enabled: when false, check() never suppresses and
  /// bounces/unsubscribes are not recorded; operator edits still work.
  bool enabled() const { return enabled_.load(std::memory_order_acquire); }
  /// Any thread: a configuration reload's [suppression] enabled,
  /// invalid_ttl and unsubscribe_ttl, for entries added from now on.
  void set_policy(bool enabled, Millis invalid_ttl, Millis unsubscribe_ttl);

  /// The list's key for an address: local part as given, domain
  /// lower-cased. Empty when `address` has no '@'.
  static std::string key(std::string_view address);

  /// Any thread. `address` in key() form. Expired entries do not count.
  std::optional<SuppressionHit> check(std::string_view address) const;

  /// True for the enhanced codes that suppress a recipient: 5.1.x except
  /// 5.1.7 and 5.1.8 (those blame the sender's address, RFC 3463), and
  /// 5.1.2 and 5.1.10 (the recipient's domain does not exist or accepts no
  /// mail, RFC 3463 and RFC 7505): a domain-level failure says nothing
  /// about the mailbox and is often repaired (a lapsed registration, a
  /// broken zone), so it must not keep each address off for invalid_ttl.
  /// Mail to such a domain bounces again at once from the DNS cache.
  static bool suppresses(const proto::EnhancedCode& code);

  /// The note of a bounce entry: "550 5.1.1 text (batch ID)" — the reply
  /// code and enhanced code once, whether or not `response` (the reply
  /// summary) starts with them.
  static std::string bounce_note(uint16_t code, std::string_view enhanced,
                                 std::string_view response, std::string_view batch);

  /// Any thread. Records a bounce: adds `address` as invalid_recipient for
  /// invalid_ttl when suppresses(code). Returns true when added. An
  /// existing entry is replaced (its expiry is extended).
  bool note_bounce(std::string_view address, const proto::EnhancedCode& code,
                   std::string_view note);
  /// Any thread. Records an unsubscribe reported by a batch (unsubscribe_ttl).
  bool note_unsubscribed(std::string_view address, std::string_view note);

  /// ringmail-ctl: adds or replaces an entry. `ttl` 0 = never expires.
  /// Errors: no '@' in the address, the list is full. Flushes the log.
  Result<void> add(std::string_view address, SuppressionReason reason, Millis ttl,
                   std::string_view note);
  /// ringmail-ctl: removes an entry; false when absent. Flushes the log.
  Result<bool> remove(std::string_view address);
  /// ringmail-ctl: live entries matching a glob (`*` any run, `?` one byte;
  /// the part after '@' matches case-insensitively), sorted by address, at
  /// most `limit`; `*total` (optional) receives the number of matches.
  std::vector<SuppressionEntry> list(std::string_view pattern, size_t limit,
                                     size_t* total = nullptr) const;

  /// Drops expired entries; returns how many. Any thread.
  size_t expire();
  /// Writes the pending log lines and syncs them (no-op in memory mode);
  /// compacts when the log has grown past twice the live entries.
  Result<void> flush();
  /// Rewrites the file with the live entries (temp file, fsync, rename,
  /// directory fsync).
  Result<void> compact();

  size_t size() const { return count_.load(std::memory_order_relaxed); }
  Stats stats() const;
  const std::string& file() const { return config_.file; }

 private:
  struct Value {
    SuppressionReason reason;
    int64_t added_ms;
    int64_t expires_ms;
    std::string note;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  using Map = std::unordered_map<std::string, Value, Hash, Eq>;
  struct alignas(64) Stripe {
    mutable std::shared_mutex mu;
    Map map;
  };

  SuppressionList(const SuppressionConfig& config, const Clock& clock, Limits limits);
  Stripe& stripe_for(std::string_view key) const;
  bool put(std::string key, Value v, bool log);
  bool erase(std::string_view key, bool log);
  // Appends to pending_ (caller holds the address's stripe lock); returns
  // the pending size.
  size_t log_line_locked(std::string_view line);
  Result<void> load();
  Result<void> write_pending();   // caller holds io_mu_
  Result<void> compact_locked();  // caller holds io_mu_

  SuppressionConfig config_;  // file and flush settings (fixed while running)
  std::atomic<bool> enabled_;
  std::atomic<int64_t> invalid_ttl_ms_;
  std::atomic<int64_t> unsubscribe_ttl_ms_;
  const Clock* clock_;
  Limits limits_;
  std::unique_ptr<Stripe[]> stripes_;
  std::atomic<size_t> count_{0};

  // Log: pending_ under pending_mu_; file writes and compaction under io_mu_.
  mutable std::mutex pending_mu_;
  std::string pending_;
  uint64_t pending_lines_ = 0;
  std::mutex io_mu_;
  int fd_ = -1;
  uint64_t log_lines_ = 0;  // lines in the file since the last compaction

  std::atomic<uint64_t> refused_full_{0};
  std::atomic<uint64_t> write_failures_{0};
  std::atomic<uint64_t> compactions_{0};
  uint64_t skipped_lines_ = 0;
};

/// Appends one entry as a JSON object (ringmail-ctl replies).
void append_suppression_json(std::string& out, const SuppressionEntry& e);

}  // namespace ringmail::engine
