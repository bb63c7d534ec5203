#include "engine/provider_rules.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace ringmail::engine {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return s;
}

/// Milliseconds in one `unit` ("s", "min", "hours", …), or 0.
int64_t unit_ms(std::string_view unit) {
  std::string u = lower(trim(unit));
  if (u == "ms" || u == "msec" || u == "millisecond" || u == "milliseconds") {
    return 1;
  }
  if (u == "s" || u == "sec" || u == "secs" || u == "second" || u == "seconds") {
    return 1'000;
  }
  if (u == "m" || u == "min" || u == "mins" || u == "minute" || u == "minutes") {
    return 60'000;
  }
  if (u == "h" || u == "hr" || u == "hrs" || u == "hour" || u == "hours") {
    return 3'600'000;
  }
  if (u == "d" || u == "day" || u == "days") {
    return 86'400'000;
  }
  return 0;
}

/// Leading digits (commas allowed as thousands separators) of `text`.
bool leading_count(std::string_view& text, uint64_t* out) {
  std::string digits;
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) ||
                             (text[i] == ',' && !digits.empty()))) {
    if (text[i] != ',') {
      digits.push_back(text[i]);
    }
    ++i;
  }
  if (digits.empty() || digits.size() > 15) {
    return false;
  }
  std::from_chars(digits.data(), digits.data() + digits.size(), *out);
  text.remove_prefix(i);
  return true;
}

}  // namespace

Result<Millis> parse_human_duration(std::string_view text) {
  std::string_view rest = trim(text);
  uint64_t n = 0;
  if (!leading_count(rest, &n)) {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\" is not a duration (e.g. \"90s\", \"30 minutes\", "
                                         "\"2 hours\", \"1 day\")");
  }
  int64_t per = unit_ms(rest);
  if (per == 0) {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\" has no known unit (ms, s, min, h, d and their "
                                         "long forms)");
  }
  if (n > static_cast<uint64_t>(365LL * 86'400'000 / per)) {
    return make_error(Errc::kConfig, "\"" + std::string(text) + "\" is longer than a year");
  }
  return Millis(static_cast<int64_t>(n) * per);
}

Result<Rate> parse_human_rate(std::string_view text) {
  std::string_view rest = trim(text);
  uint64_t n = 0;
  auto bad = [&] {
    return make_error(Errc::kConfig,
                      "\"" + std::string(text) +
                          "\" is not a rate (e.g. \"100/s\", \"100/min\", \"10000/h\", \"1000 per "
                          "hour\")");
  };
  if (!leading_count(rest, &n) || n == 0) {
    return bad();
  }
  rest = trim(rest);
  if (rest.starts_with("/")) {
    rest.remove_prefix(1);
  } else if (lower(rest.substr(0, 4)) == "per ") {
    rest.remove_prefix(4);
  } else {
    return bad();
  }
  int64_t per = unit_ms(rest);
  if (per == 0) {
    return bad();
  }
  double per_second = static_cast<double>(n) * 1000.0 / static_cast<double>(per);
  if (per_second > 1'000'000) {
    return make_error(Errc::kConfig, "\"" + std::string(text) + "\" is over 1000000/s");
  }
  return Rate{per_second};
}

Result<std::pair<uint32_t, Millis>> parse_threshold(std::string_view text) {
  std::string_view rest = trim(text);
  uint64_t n = 0;
  auto bad = [&] {
    return make_error(Errc::kConfig, "\"" + std::string(text) +
                                         "\" is not a threshold (\"N/period\": \"2/h\", "
                                         "\"5/10min\")");
  };
  if (!leading_count(rest, &n) || n == 0 || n > 100'000 || !rest.starts_with("/")) {
    return bad();
  }
  rest.remove_prefix(1);
  rest = trim(rest);
  Millis window{0};
  if (!rest.empty() && std::isdigit(static_cast<unsigned char>(rest.front()))) {
    auto d = parse_human_duration(rest);
    if (!d.ok()) {
      return bad();
    }
    window = *d;
  } else {
    int64_t per = unit_ms(rest);
    if (per == 0) {
      return bad();
    }
    window = Millis(per);
  }
  if (window.count() <= 0) {
    return bad();
  }
  return std::pair<uint32_t, Millis>{static_cast<uint32_t>(n), window};
}

// ---------------------------------------------------------------------------
// ShapingOverrides

void ShapingOverrides::apply(Shaping& s) const {
  s.max_connections = max_connections.value_or(s.max_connections);
  s.max_msgs_per_conn = max_msgs_per_conn.value_or(s.max_msgs_per_conn);
  s.max_rcpts_per_txn = max_rcpts_per_txn.value_or(s.max_rcpts_per_txn);
  s.msg_rate = msg_rate.value_or(s.msg_rate);
  s.connect_rate = connect_rate.value_or(s.connect_rate);
  s.tls = tls.value_or(s.tls);
}

void ShapingOverrides::merge(const ShapingOverrides& later) {
  auto take = [](auto& mine, const auto& theirs) {
    if (theirs) {
      mine = theirs;
    }
  };
  take(max_connections, later.max_connections);
  take(max_msgs_per_conn, later.max_msgs_per_conn);
  take(max_rcpts_per_txn, later.max_rcpts_per_txn);
  take(msg_rate, later.msg_rate);
  take(connect_rate, later.connect_rate);
  take(tls, later.tls);
}

bool ShapingOverrides::empty() const {
  return !max_connections && !max_msgs_per_conn && !max_rcpts_per_txn && !msg_rate &&
         !connect_rate && !tls;
}

namespace {

std::string rate_text(Rate r) {
  // The shortest unit in which the rate is a whole number, as written.
  char buf[48];
  for (auto [unit, secs] : {std::pair<const char*, double>{"s", 1}, {"min", 60}, {"h", 3600}}) {
    double n = r.per_second * secs;
    if (n >= 1 && std::abs(n - std::round(n)) < 1e-6 * n) {
      std::snprintf(buf, sizeof buf, "%.0f/%s", std::round(n), unit);
      return buf;
    }
  }
  std::snprintf(buf, sizeof buf, "%g/s", r.per_second);
  return buf;
}

}  // namespace

std::string ShapingOverrides::describe() const {
  std::string out;
  auto add = [&](const char* k, const std::string& v) {
    out += (out.empty() ? "" : ", ") + std::string(k) + "=" + v;
  };
  if (max_connections) {
    add("connection_limit", std::to_string(*max_connections));
  }
  if (connect_rate) {
    add("max_connection_rate", rate_text(*connect_rate));
  }
  if (max_msgs_per_conn) {
    add("max_deliveries_per_connection", std::to_string(*max_msgs_per_conn));
  }
  if (msg_rate) {
    add("max_message_rate", rate_text(*msg_rate));
  }
  if (max_rcpts_per_txn) {
    add("max_recipients_per_batch", std::to_string(*max_rcpts_per_txn));
  }
  if (tls) {
    add("enable_tls", std::string(tls_policy_name(*tls)));
  }
  return out;
}

std::string_view automation_action_name(AutomationAction a) {
  switch (a) {
    case AutomationAction::kSuspend:
      return "Suspend";
    case AutomationAction::kSetConfig:
      return "SetConfig";
    case AutomationAction::kBounce:
      return "Bounce";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// Parsing

class ProviderRulesParser {
 public:
  explicit ProviderRulesParser(ProviderRules& r) : r_(r) {}

  Result<void> file(std::string_view name, std::string_view text) {
    toml::table root;
    try {
      root = toml::parse(text, name);
    } catch (const toml::parse_error& e) {
      std::ostringstream os;
      os << name << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
         << e.description();
      return make_error(Errc::kConfig, os.str());
    }
    file_ = std::string(name);
    for (auto&& [k, v] : root) {
      std::string key(k.str());
      const toml::table* t = v.as_table();
      if (t == nullptr) {
        return bad(key, "must be a table");
      }
      if (key == "provider") {
        for (auto&& [pk, pv] : *t) {
          const toml::table* pt = pv.as_table();
          if (pt == nullptr) {
            return bad("provider." + std::string(pk.str()), "must be a table");
          }
          RM_TRY(block(*pt, "provider " + std::string(pk.str()), std::string(pk.str()),
                       /*provider=*/true, r_.providers_));
        }
      } else if (key == "default") {
        std::vector<ProviderRules::Block> one;
        if (!r_.default_.name.empty()) {
          one.push_back(std::move(r_.default_));
        }
        RM_TRY(block(*t, "default", "default", false, one));
        r_.default_ = std::move(one.front());
        if (!r_.default_.automation.empty()) {
          return bad("default", "automation rules belong to a domain or provider block");
        }
      } else {
        RM_TRY(block(*t, "domain " + key, lower(key), false, r_.domains_));
      }
    }
    return ok_result();
  }

  void finish() {
    for (const auto& [what, keys] : ignored_) {
      std::string list;
      for (const auto& k : keys) {
        list += (list.empty() ? "" : ", ") + k;
      }
      r_.warnings_.push_back(what + ": not used by ringmail: " + list);
    }
  }

 private:
  Error bad(const std::string& where, const std::string& what) const {
    return make_error(Errc::kConfig, file_ + ": " + where + ": " + what);
  }

  Result<void> block(const toml::table& t, const std::string& where, const std::string& name,
                     bool provider, std::vector<ProviderRules::Block>& into) {
    auto it = std::find_if(into.begin(), into.end(),
                           [&](const ProviderRules::Block& b) { return b.name == name; });
    if (it != into.end() && t.contains("replace_base") && t["replace_base"].value_or(false)) {
      into.erase(it);
      it = into.end();
    }
    if (it == into.end()) {
      into.push_back(ProviderRules::Block{});
      it = into.end() - 1;
      it->name = name;
    }
    ProviderRules::Block& b = *it;
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (key == "replace_base" || key == "mx_rollup") {
        continue;  // rollup: ringmail shapes per domain, and providers by MX name
      }
      if (key == "match") {
        if (!provider) {
          return bad(where, "match belongs to provider blocks");
        }
        RM_TRY(matches(v, where, b));
        continue;
      }
      if (key == "automation") {
        const toml::array* arr = v.as_array();
        if (arr == nullptr) {
          return bad(where, "automation must be an array of tables ([[...automation]])");
        }
        for (size_t i = 0; i < arr->size(); ++i) {
          const toml::table* rt = (*arr)[i].as_table();
          if (rt == nullptr) {
            return bad(where, "automation must be an array of tables");
          }
          auto rule = std::make_shared<AutomationRule>();
          rule->origin = where + " #" + std::to_string(b.automation.size() + 1);
          RM_TRY(automation(*rt, rule->origin, *rule));
          b.automation.push_back(std::move(rule));
        }
        continue;
      }
      bool known = false;
      RM_TRY(limit(key, v, where, b.limits, &known));
      if (!known) {
        ignored_[where].insert(key);
      }
    }
    if (provider && b.mx_suffixes.empty() && b.mx_hosts.empty()) {
      return bad(where, "a provider block needs match = [{MXSuffix = \"...\"}, ...]");
    }
    return ok_result();
  }

  Result<void> matches(const toml::node& v, const std::string& where, ProviderRules::Block& b) {
    const toml::array* arr = v.as_array();
    if (arr == nullptr) {
      return bad(where, "match must be an array of {MXSuffix = ...} or {MXHostname = ...}");
    }
    for (const auto& item : *arr) {
      const toml::table* m = item.as_table();
      if (m == nullptr || m->size() != 1) {
        return bad(where, "each match is one {MXSuffix = \"...\"} or {MXHostname = \"...\"}");
      }
      for (auto&& [mk, mv] : *m) {  // exactly one entry
        auto s = mv.value<std::string>();
        if (!s || s->empty()) {
          return bad(where, "match values are non-empty strings");
        }
        if (mk.str() == "MXSuffix") {
          std::string suffix = lower(*s);
          if (suffix.front() != '.') {
            suffix.insert(suffix.begin(), '.');
          }
          b.mx_suffixes.push_back(suffix);
        } else if (mk.str() == "MXHostname") {
          b.mx_hosts.push_back(lower(*s));
        } else {
          return bad(where,
                     "unknown match kind " + std::string(mk.str()) + " (MXSuffix or MXHostname)");
        }
      }
    }
    return ok_result();
  }

  /// One limit key; `known` false for keys ringmail does not use.
  Result<void> limit(const std::string& key, const toml::node& v, const std::string& where,
                     ShapingOverrides& o, bool* known) {
    *known = true;
    auto count = [&](uint32_t lo, uint32_t hi) -> Result<uint32_t> {
      auto n = v.value<int64_t>();
      if (!n || !v.is_integer() || *n < lo || *n > hi) {
        return bad(where, key + " must be an integer between " + std::to_string(lo) + " and " +
                              std::to_string(hi));
      }
      return static_cast<uint32_t>(*n);
    };
    auto rate = [&]() -> Result<Rate> {
      auto s = v.value<std::string>();
      if (!s || !v.is_string()) {
        return bad(where, key + " must be a rate string such as \"100/s\"");
      }
      auto r = parse_human_rate(*s);
      if (!r.ok()) {
        return bad(where, key + ": " + r.error().message);
      }
      return *r;
    };
    if (key == "connection_limit") {
      auto n = count(1, 10'000);
      RM_TRY(n);
      o.max_connections = *n;
    } else if (key == "max_deliveries_per_connection") {
      auto n = count(1, 1'000'000);
      RM_TRY(n);
      o.max_msgs_per_conn = *n;
    } else if (key == "max_recipients_per_batch") {
      auto n = count(1, 1000);
      RM_TRY(n);
      o.max_rcpts_per_txn = *n;
    } else if (key == "max_message_rate") {
      auto r = rate();
      RM_TRY(r);
      o.msg_rate = *r;
    } else if (key == "max_connection_rate") {
      auto r = rate();
      RM_TRY(r);
      o.connect_rate = *r;
    } else if (key == "enable_tls") {
      std::string s = v.value_or(std::string());
      if (s == "Disabled") {
        o.tls = TlsPolicy::kNone;
      } else if (s == "Opportunistic" || s == "OpportunisticInsecure") {
        o.tls = TlsPolicy::kOpportunistic;
      } else if (s == "Required") {
        o.tls = TlsPolicy::kVerify;
      } else if (s == "RequiredInsecure") {
        o.tls = TlsPolicy::kRequired;
      } else {
        return bad(where,
                   "enable_tls must be Disabled, Opportunistic, OpportunisticInsecure, "
                   "Required or RequiredInsecure");
      }
    } else {
      *known = false;
    }
    return ok_result();
  }

  Result<void> automation(const toml::table& t, const std::string& where, AutomationRule& r) {
    bool have_regex = false, have_action = false, have_duration = false;
    for (auto&& [k, v] : t) {
      std::string key(k.str());
      if (key == "regex") {
        auto s = v.value<std::string>();
        if (!s || s->empty()) {
          return bad(where, "regex must be a non-empty string");
        }
        if (s->size() > 1024) {
          return bad(where, "regex longer than 1024 bytes");
        }
        try {
          r.regex = std::regex(*s, std::regex::ECMAScript | std::regex::optimize);
        } catch (const std::regex_error& e) {
          return bad(where, "regex \"" + *s + "\" does not compile: " + e.what());
        }
        r.pattern = *s;
        have_regex = true;
      } else if (key == "action") {
        RM_TRY(action(v, where, r));
        have_action = true;
      } else if (key == "trigger") {
        if (auto s = v.value<std::string>(); s && *s == "Immediate") {
          r.threshold = 1;
          continue;
        }
        const toml::table* tt = v.as_table();
        auto th = tt != nullptr ? (*tt)["Threshold"].value<std::string>() : std::nullopt;
        if (!th) {
          return bad(where, "trigger must be \"Immediate\" or {Threshold = \"N/period\"}");
        }
        auto p = parse_threshold(*th);
        if (!p.ok()) {
          return bad(where, "trigger: " + p.error().message);
        }
        r.threshold = p->first;
        r.window = p->second;
      } else if (key == "duration") {
        auto s = v.value<std::string>();
        auto d = s ? parse_human_duration(*s) : Result<Millis>(make_error(Errc::kConfig, "?"));
        if (!d.ok() || d->count() <= 0) {
          return bad(where, "duration must be a positive duration such as \"2 hours\"");
        }
        r.duration = *d;
        have_duration = true;
      } else {
        return bad(where, "unknown key " + key + " (regex, action, trigger, duration)");
      }
    }
    if (!have_regex || !have_action || !have_duration) {
      return bad(where, "an automation rule needs regex, action and duration");
    }
    return ok_result();
  }

  Result<void> action(const toml::node& v, const std::string& where, AutomationRule& r) {
    if (auto s = v.value<std::string>(); s && v.is_string()) {
      if (*s == "Suspend") {
        r.action = AutomationAction::kSuspend;
        return ok_result();
      }
      if (*s == "Bounce") {
        r.action = AutomationAction::kBounce;
        return ok_result();
      }
      return bad(where, "action \"" + *s +
                            "\" is not supported (Suspend, Bounce, or {SetConfig = {name, "
                            "value}}; ringmail has no tenants or campaigns)");
    }
    const toml::table* t = v.as_table();
    const toml::table* sc = t != nullptr ? t->get_as<toml::table>("SetConfig") : nullptr;
    if (sc == nullptr) {
      return bad(where, "action must be \"Suspend\", \"Bounce\" or {SetConfig = {name, value}}");
    }
    auto name = (*sc)["name"].value<std::string>();
    const toml::node* value = sc->get("value");
    if (!name || value == nullptr) {
      return bad(where, "SetConfig needs name and value");
    }
    bool known = false;
    RM_TRY(limit(*name, *value, where, r.set, &known));
    if (!known) {
      return bad(where, "SetConfig of " + *name +
                            " is not supported (connection_limit, max_connection_rate, "
                            "max_deliveries_per_connection, max_message_rate, "
                            "max_recipients_per_batch)");
    }
    r.action = AutomationAction::kSetConfig;
    return ok_result();
  }

  ProviderRules& r_;
  std::string file_;
  std::map<std::string, std::set<std::string>> ignored_;
};

Result<std::shared_ptr<const ProviderRules>> ProviderRules::parse(
    const std::vector<std::pair<std::string, std::string>>& texts) {
  auto rules = std::make_shared<ProviderRules>();
  ProviderRulesParser p(*rules);
  for (const auto& [name, text] : texts) {
    RM_TRY(p.file(name, text));
  }
  p.finish();
  return std::shared_ptr<const ProviderRules>(std::move(rules));
}

Result<std::shared_ptr<const ProviderRules>> ProviderRules::load(
    const std::vector<std::string>& files) {
  std::vector<std::pair<std::string, std::string>> texts;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      return make_error(Errc::kConfig, "provider_shaping.files: cannot read " + f);
    }
    std::ostringstream os;
    os << in.rdbuf();
    if (os.str().size() > (16u << 20)) {
      return make_error(Errc::kConfig, "provider_shaping.files: " + f + " is over 16 MiB");
    }
    texts.emplace_back(f, os.str());
  }
  return parse(texts);
}

ProviderRules::Match ProviderRules::match(std::string_view domain,
                                          std::span<const std::string> mx_hosts) const {
  Match m;
  m.limits = default_.limits;
  for (const Block& p : providers_) {
    bool hit = false;
    for (const std::string& host : mx_hosts) {
      for (const std::string& suffix : p.mx_suffixes) {
        hit = hit || (host.size() > suffix.size() && host.ends_with(suffix));
      }
      for (const std::string& exact : p.mx_hosts) {
        hit = hit || host == exact;
      }
    }
    if (hit) {
      m.provider = p.name;
      m.limits.merge(p.limits);
      for (const auto& r : p.automation) {
        m.automation.push_back(r.get());
      }
      break;
    }
  }
  for (const Block& d : domains_) {
    if (d.name == domain) {
      m.limits.merge(d.limits);
      for (const auto& r : d.automation) {
        m.automation.push_back(r.get());
      }
      break;
    }
  }
  return m;
}

}  // namespace ringmail::engine
