// runtime_reload.cc — a configuration reload without a restart
// (Runtime::reload; ringmail-ctl reload, SIGHUP in ringmaild).
//
// A reload is prepared on the caller's thread: everything that reads a file
// (DKIM keys, the submission listeners' certificates) is done before
// anything changes, so a bad file leaves the running configuration whole.
// Then the merged configuration goes to every shard through its external
// queue, under reload_mu_, so concurrent reloads reach every shard in one
// order; each shard switches between two events (Shard::reconfigure).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <set>

#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/submission.h"
#include "engine/tls.h"
#include "proto/json.h"

namespace ringmail::engine {

namespace {

// Top-level keys a reload applies; any other key that changed needs a
// restart. [suppression] is compared field by field (its file is fixed).
constexpr std::string_view kReloadable[] = {"log_level",        "delivery", "shaping",
                                            "provider_shaping", "routing",  "retry",
                                            "bounces",          "dkim",     "tls"};

bool reloadable(std::string_view key) {
  for (std::string_view k : kReloadable) {
    if (k == key) {
      return true;
    }
  }
  return false;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    out += out.empty() ? "" : ", ";
    out += s;
  }
  return out.empty() ? "nothing" : out;
}

struct ReloadCall {
  Runtime::ReloadFn done;
  int from_shard;
  Runtime::ReloadReport report;
  std::atomic<uint32_t> remaining;
};

void reload_answer(std::unique_ptr<ReloadCall> call) {
  call->done(std::move(call->report));
}

void reload_answer_msg(Shard& /*shard*/, void* p, uint64_t /*a*/) {
  reload_answer(std::unique_ptr<ReloadCall>(static_cast<ReloadCall*>(p)));
}

void reload_applied(Shard& shard, ReloadCall* call) {
  if (call->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    return;
  }
  if (call->from_shard >= 0 && static_cast<uint32_t>(call->from_shard) != shard.id()) {
    shard.post(static_cast<uint32_t>(call->from_shard), ShardMsg{&reload_answer_msg, call, 0});
    return;
  }
  reload_answer(std::unique_ptr<ReloadCall>(call));
}

}  // namespace

void Runtime::reload(Config fresh, int from_shard, ReloadFn done) {
  auto refuse = [&done](std::string why) {
    RM_LOG_ERROR("configuration reload refused, the running configuration stays: %s", why.c_str());
    done(make_error(Errc::kConfig, std::move(why)));
  };
  if (!accepting()) {
    refuse("ringmail is stopping");
    return;
  }
  std::unique_lock lock(reload_mu_);
  const Config& cur = current_ != nullptr ? *current_ : config_;

  ReloadReport report;
  std::set<std::string, std::less<>> keys;
  for (const auto& [k, v] : cur.sections) {
    keys.insert(k);
  }
  for (const auto& [k, v] : fresh.sections) {
    keys.insert(k);
  }
  for (const std::string& k : keys) {
    auto a = cur.sections.find(k);
    auto b = fresh.sections.find(k);
    const bool same = (a == cur.sections.end()) == (b == fresh.sections.end()) &&
                      (a == cur.sections.end() || a->second == b->second);
    if (same || k == "suppression") {
      continue;
    }
    (reloadable(k) ? report.applied : report.restart_required).push_back(k);
  }
  const SuppressionConfig& sa = cur.suppression;
  const SuppressionConfig& sb = fresh.suppression;
  if (sa.enabled != sb.enabled || sa.invalid_ttl != sb.invalid_ttl ||
      sa.unsubscribe_ttl != sb.unsubscribe_ttl) {
    report.applied.push_back("suppression");
  }
  if (sa.file != sb.file) {
    report.restart_required.push_back("suppression.file");
  }
  if (sa.flush_interval != sb.flush_interval) {
    report.restart_required.push_back("suppression.flush_interval");
  }

  // Everything that reads a file, before anything changes.
  auto signer = DkimSigner::create(fresh.dkim);
  if (!signer.ok()) {
    refuse(signer.error().message);
    return;
  }
  if (fresh.tls.ca_file != cur.tls.ca_file && !fresh.tls.ca_file.empty() &&
      ::access(fresh.tls.ca_file.c_str(), R_OK) != 0) {
    refuse("tls.ca_file: cannot read " + fresh.tls.ca_file + ": " + std::strerror(errno));
    return;
  }
  std::vector<std::unique_ptr<TlsContext>> server_contexts;
  if (!config_.submission.listeners.empty()) {
    // Certificates are read again even when no key changed: a renewed
    // certificate is usually written over the old file.
    auto contexts = Submission::load_tls_contexts(fresh.tls, config_.submission);
    if (!contexts.ok()) {
      refuse(contexts.error().message);
      return;
    }
    server_contexts = std::move(*contexts);
  }

  auto merged = std::make_shared<Config>(cur);
  merged->log_level = fresh.log_level;
  merged->delivery = fresh.delivery;
  merged->shaping = fresh.shaping;
  merged->provider_shaping = fresh.provider_shaping;
  merged->routing = fresh.routing;
  merged->retry = fresh.retry;
  merged->bounces = fresh.bounces;
  merged->dkim = fresh.dkim;
  merged->tls = fresh.tls;
  merged->suppression.enabled = sb.enabled;
  merged->suppression.invalid_ttl = sb.invalid_ttl;
  merged->suppression.unsubscribe_ttl = sb.unsubscribe_ttl;
  for (std::string_view k : kReloadable) {
    auto b = fresh.sections.find(k);
    if (b != fresh.sections.end()) {
      merged->sections.insert_or_assign(std::string(k), b->second);
    } else if (auto a = merged->sections.find(k); a != merged->sections.end()) {
      merged->sections.erase(a);
    }
  }
  current_ = merged;

  {
    std::lock_guard dl(dkim_mu_);
    dkim_ = (*signer)->empty() ? nullptr : std::move(*signer);
  }
  suppression_->set_policy(sb.enabled, sb.invalid_ttl, sb.unsubscribe_ttl);
  if (auto level = parse_log_level(merged->log_level)) {
    set_log_level(*level);
  }
  RM_LOG_INFO("configuration reloaded: applied %s; needs a restart (kept as running): %s",
              join(report.applied).c_str(), join(report.restart_required).c_str());

  auto* call = new ReloadCall{std::move(done), from_shard, std::move(report), {shard_count()}};
  auto contexts =
      std::make_shared<std::vector<std::unique_ptr<TlsContext>>>(std::move(server_contexts));
  for (uint32_t i = 0; i < shard_count(); ++i) {
    post_external(i, [call, merged, contexts, i](Shard& s) {
      std::vector<std::unique_ptr<TlsContext>> mine;
      if (i == 0) {
        mine = std::move(*contexts);
      }
      s.reconfigure(merged, std::move(mine));
      reload_applied(s, call);
    });
  }
}

void Runtime::set_config_source(std::function<Result<Config>()> source) {
  std::lock_guard lock(reload_mu_);
  config_source_ = std::move(source);
}

void Runtime::reload_from_source(int from_shard, ReloadFn done) {
  std::function<Result<Config>()> source;
  {
    std::lock_guard lock(reload_mu_);
    source = config_source_;
  }
  if (!source) {
    done(make_error(Errc::kConfig,
                    "this engine was not started from a configuration file: nothing to read "
                    "again (an embedding application reloads with Engine::reload(config))"));
    return;
  }
  auto fresh = source();
  if (!fresh.ok()) {
    RM_LOG_ERROR("configuration reload refused, the running configuration stays: %s",
                 fresh.error().message.c_str());
    done(std::move(fresh).take_error());
    return;
  }
  reload(std::move(*fresh), from_shard, std::move(done));
}

std::string Runtime::reload_json(const ReloadReport& r) {
  std::string out = "{\"ok\":true,\"command\":\"reload\",\"applied\":[";
  for (size_t i = 0; i < r.applied.size(); ++i) {
    out += i == 0 ? "" : ",";
    proto::append_json_string(out, r.applied[i]);
  }
  out += "],\"restart_required\":[";
  for (size_t i = 0; i < r.restart_required.size(); ++i) {
    out += i == 0 ? "" : ",";
    proto::append_json_string(out, r.restart_required[i]);
  }
  out += "]}";
  return out;
}

}  // namespace ringmail::engine
