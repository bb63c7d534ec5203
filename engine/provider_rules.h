/// provider_rules.h — traffic-shaping rules per mailbox provider, read from
/// files in KumoMTA's shaping.toml shape ([provider_shaping] files).
///
/// A rules file holds blocks:
///   ["default"]                     limits for every destination
///   ["example.com"]                 limits for one recipient domain
///   [provider."name"]               limits for every domain whose MX hosts
///   match = [{MXSuffix = ".x.net"},   match (a suffix of, or exactly, one of
///            {MXHostname = "mx.y"}]   the MX host names)
/// and, inside a domain or provider block, automation rules:
///   [[provider."name".automation]]
///   regex = "\\[TS04\\]"            matched against the remote reply
///   action = "Suspend"              or "Bounce", or
///                                   {SetConfig = {name = "...", value = ...}}
///   trigger = {Threshold = "2/h"}   optional; default: the first match
///   duration = "2 hours"
///
/// Limits a block may set (the rest of KumoMTA's egress-path keys are
/// accepted and reported once as ignored): connection_limit,
/// max_connection_rate, max_deliveries_per_connection, max_message_rate,
/// max_recipients_per_batch, enable_tls (Disabled, Opportunistic,
/// OpportunisticInsecure, Required, RequiredInsecure). Later files merge
/// over earlier ones block by block, key by key; `replace_base = true` in a
/// block drops what earlier files said for it.
///
/// Precedence for one destination, lowest first: [delivery]/[retry], the
/// rules' "default", the matching provider block (the first in file
/// order), the domain's own block, then the best [[shaping]] rule of the
/// main configuration. Provider blocks need the MX host names, so they
/// apply once the destination's route is resolved.
///
/// Automation (engine/scheduler.cc): a rule fires when its regex matches a
/// reply (a deferral, a bounce or a failed connection) `threshold` times
/// within `window` (once, by default). Its effect lasts `duration`:
///   - Suspend: no transactions or connections; what waits is deferred
///     with the matched reply;
///   - SetConfig: one limit overridden (connection_limit,
///     max_connection_rate, max_deliveries_per_connection,
///     max_message_rate, max_recipients_per_batch);
///   - Bounce: queued recipients bounce with the matched reply instead of
///     being sent.
/// Operators list and cancel effects with `ringmail-ctl rules`.
///
/// Thread safety: immutable once loaded; shared by every shard.
#pragma once

#include <memory>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/config.h"
#include "proto/result.h"

namespace ringmail::engine {

/// What a rules block (or a SetConfig action) sets; unset keys leave the
/// layer below alone.
struct ShapingOverrides {
  std::optional<uint32_t> max_connections;
  std::optional<uint32_t> max_msgs_per_conn;
  std::optional<uint32_t> max_rcpts_per_txn;
  std::optional<Rate> msg_rate;
  std::optional<Rate> connect_rate;
  std::optional<TlsPolicy> tls;

  void apply(Shaping& s) const;
  /// Keys set in `later` replace ours.
  void merge(const ShapingOverrides& later);
  bool empty() const;
  /// "connection_limit=5, max_message_rate=10/s" (for logs and listings).
  std::string describe() const;
};

enum class AutomationAction : uint8_t { kSuspend, kSetConfig, kBounce };
std::string_view automation_action_name(AutomationAction a);

struct AutomationRule {
  std::string origin;   // "provider yahoo #1", "domain comcast.net #1"
  std::string pattern;  // the regex as written
  std::regex regex;     // ECMAScript, case-sensitive as in the file
  AutomationAction action = AutomationAction::kSuspend;
  ShapingOverrides set;  // kSetConfig
  uint32_t threshold = 1;
  Millis window{0};  // with threshold > 1: the matches must fall within this
  Millis duration{0};
};

class ProviderRules {
 public:
  /// Loads the files in order (later ones merge over earlier ones).
  /// Errors name the file and the block; unknown limits are collected in
  /// warnings().
  [[nodiscard]] static Result<std::shared_ptr<const ProviderRules>> load(
      const std::vector<std::string>& files);
  /// The same from TOML texts (name, text), for tests and the built-in set.
  [[nodiscard]] static Result<std::shared_ptr<const ProviderRules>> parse(
      const std::vector<std::pair<std::string, std::string>>& texts);

  struct Match {
    ShapingOverrides limits;  // "default", then provider, then domain block
    std::string provider;     // the matching provider's name, if any
    std::vector<const AutomationRule*> automation;
  };
  /// The rules for recipient domain `domain` (lower-case) whose MX hosts
  /// are `mx_hosts` (lower-case, empty before resolution).
  Match match(std::string_view domain, std::span<const std::string> mx_hosts) const;
  /// True when some provider block matches on MX names (so a destination's
  /// limits may change once its route is resolved).
  bool has_providers() const { return !providers_.empty(); }
  const std::vector<std::string>& warnings() const { return warnings_; }
  size_t size() const { return providers_.size() + domains_.size(); }

  struct Block {
    std::string name;  // domain, or provider name
    ShapingOverrides limits;
    std::vector<std::string> mx_suffixes;  // provider blocks
    std::vector<std::string> mx_hosts;
    std::vector<std::shared_ptr<AutomationRule>> automation;
  };

 private:
  Block default_;
  std::vector<Block> providers_;  // file order
  std::vector<Block> domains_;
  std::vector<std::string> warnings_;
  friend class ProviderRulesParser;
};

/// ringmail's own rules for the big mailbox providers (tools/shaping.toml,
/// compiled in).
std::string_view builtin_shaping_rules();

/// KumoMTA-style quantities, also accepted by ringmail's own parsers:
/// durations such as "2 hours", "30 minutes", "90s", "1 day"; rates such
/// as "100/min", "10000/h", "2/hr", "50/s", "1000 per hour".
[[nodiscard]] Result<Millis> parse_human_duration(std::string_view text);
[[nodiscard]] Result<Rate> parse_human_rate(std::string_view text);
/// A trigger threshold "N/period": count and window.
[[nodiscard]] Result<std::pair<uint32_t, Millis>> parse_threshold(std::string_view text);

}  // namespace ringmail::engine
