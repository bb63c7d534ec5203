// Metrics: per-shard counts, gathered on demand (see metrics.h).
#include "engine/metrics.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <memory>

#include "engine/runtime.h"
#include "engine/shard.h"
#include "engine/spool.h"

namespace ringmail::engine {

void FsyncHistogram::observe(double seconds) {
  size_t i = 0;
  while (i < kFsyncBucketBounds.size() && seconds > kFsyncBucketBounds[i]) {
    ++i;
  }
  ++buckets[i];
  ++count;
  sum_seconds += seconds;
}

void FsyncHistogram::add(const FsyncHistogram& o) {
  for (size_t i = 0; i < buckets.size(); ++i) {
    buckets[i] += o.buckets[i];
  }
  count += o.count;
  sum_seconds += o.sum_seconds;
}

void DestinationCounters::count(std::string_view recipient, uint32_t pool, EventType type) {
  size_t kind;
  switch (type) {
    case EventType::kDelivered:
      kind = static_cast<size_t>(OutcomeKind::kDelivered);
      break;
    case EventType::kDeferred:
      kind = static_cast<size_t>(OutcomeKind::kDeferred);
      break;
    case EventType::kBounced:
      kind = static_cast<size_t>(OutcomeKind::kBounced);
      break;
    default:
      return;
  }
  size_t at = recipient.rfind('@');
  std::string_view domain = at == std::string_view::npos ? recipient : recipient.substr(at + 1);
  auto it = by_domain_.find(domain);
  if (it == by_domain_.end()) {
    if (by_domain_.size() >= kMaxTracked) {
      if (untracked_.size() <= pool) {
        untracked_.resize(pool + 1, OutcomeCounts{});
      }
      ++untracked_[pool][kind];
      return;
    }
    it = by_domain_.emplace(std::string(domain), std::vector<OutcomeCounts>()).first;
  }
  if (it->second.size() <= pool) {
    it->second.resize(pool + 1, OutcomeCounts{});
  }
  ++it->second[pool][kind];
}

void DestinationCounters::snapshot(std::vector<Row>* out) const {
  for (const auto& [domain, pools] : by_domain_) {
    for (uint32_t p = 0; p < pools.size(); ++p) {
      const OutcomeCounts& c = pools[p];
      if (c[0] + c[1] + c[2] > 0) {
        out->push_back(Row{domain, p, c});
      }
    }
  }
}

void snapshot_shard(Shard& shard, ShardSnapshot* out) {
  shard.destination_counters().snapshot(&out->destinations);
  out->untracked = shard.destination_counters().untracked();
  Scheduler& sched = shard.scheduler();
  sched.queue_depth(&out->ready, &out->retry_waiting, &out->in_flight);
  out->connections = sched.connections();
  out->connecting = sched.connecting();
  out->dns_entries = shard.dns_cache().size();
  out->dns_hits = shard.dns_cache().hits();
  out->dns_queries = shard.dns().queries_sent();
  if (Spool* spool = shard.spool(); spool != nullptr) {
    out->spool_bytes = spool->stats().bytes;
    out->fsync = spool->stats().fsync;
  }
}

namespace {

/// A scrape in progress: one slot per shard, filled on that shard.
struct Collect {
  std::vector<ShardSnapshot> shards;
  std::function<void(std::vector<ShardSnapshot>)> done;
  uint32_t pending = 0;
};

void collect_reply_msg(Shard& /*shard0*/, void* p, uint64_t /*from*/) {
  auto* c = static_cast<Collect*>(p);
  if (--c->pending > 0) {
    return;
  }
  std::unique_ptr<Collect> owned(c);
  owned->done(std::move(owned->shards));
}

void collect_run_msg(Shard& shard, void* p, uint64_t /*a*/) {
  auto* c = static_cast<Collect*>(p);
  snapshot_shard(shard, &c->shards[shard.id()]);
  shard.post(0, ShardMsg{&collect_reply_msg, c, shard.id()});
}

}  // namespace

void collect_metrics(Shard& shard0, std::function<void(std::vector<ShardSnapshot>)> done) {
  uint32_t n = shard0.runtime().shard_count();
  auto* c = new Collect();
  c->shards.resize(n);
  c->done = std::move(done);
  c->pending = n;
  for (uint32_t i = 0; i < n; ++i) {
    shard0.post(i, ShardMsg{&collect_run_msg, c, 0});
  }
}

void append_label_value(std::string& out, std::string_view s) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

namespace {

/// Appends HELP and TYPE lines.
void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

/// Appends one sample; `labels` is the text inside the braces (or empty).
void sample(std::string& out, std::string_view name, std::string_view labels, uint64_t v) {
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

void sample_double(std::string& out, std::string_view name, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  out += name;
  out += ' ';
  out += buf;
  out += '\n';
}

constexpr const char* kOutcomeNames[kOutcomeKinds] = {"delivered", "deferred", "bounced"};
constexpr const char* kSourceNames[kBatchSources] = {"socket", "http", "submission"};
constexpr const char* kStatusNames[kAckStatuses] = {"accepted", "rejected", "try_later",
                                                    "spool_unavailable"};

}  // namespace

MetricsExporter::MetricsExporter(Runtime& rt) : rt_(rt) {}

void MetricsExporter::assign_labels(const std::map<Key, OutcomeCounts>& merged,
                                    std::vector<OutcomeCounts>* other) {
  const size_t room = rt_.config().http.metrics_destinations;
  if (labels_.size() >= room) {
    return;
  }
  std::vector<std::pair<uint64_t, const Key*>> candidates;
  for (const auto& [key, c] : merged) {
    if (!labels_.contains(key)) {
      candidates.emplace_back(c[0] + c[1] + c[2], &key);
    }
  }
  std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : *a.second < *b.second;
  });
  for (const auto& [total, key] : candidates) {
    if (labels_.size() >= room) {
      break;
    }
    const OutcomeCounts& c = merged.at(*key);
    uint32_t pool = key->first;
    if (pool >= other->size()) {
      continue;
    }
    if (other_shown_.size() <= pool) {
      other_shown_.resize(pool + 1, OutcomeCounts{});
    }
    // What "other" holds beyond what it has shown may move to the new
    // label; the rest stays in "other" for good (its base).
    Label l;
    for (size_t k = 0; k < kOutcomeKinds; ++k) {
      uint64_t now = (*other)[pool][k];
      uint64_t slack = now > other_shown_[pool][k] ? now - other_shown_[pool][k] : 0;
      uint64_t give = std::min(c[k], slack);
      l.base[k] = c[k] - give;
      (*other)[pool][k] -= give;
    }
    labels_.emplace(*key, l);
  }
}

std::string MetricsExporter::render(const std::vector<ShardSnapshot>& shards) {
  const Config& cfg = rt_.config();
  const size_t pools = cfg.egress.pools.size();
  std::map<Key, OutcomeCounts> merged;
  std::vector<OutcomeCounts> other(pools, OutcomeCounts{});
  ShardSnapshot sum;
  for (const ShardSnapshot& s : shards) {
    for (const auto& row : s.destinations) {
      OutcomeCounts& m = merged[Key{row.pool, row.domain}];
      for (size_t k = 0; k < kOutcomeKinds; ++k) {
        m[k] += row.counts[k];
      }
    }
    for (uint32_t p = 0; p < s.untracked.size() && p < pools; ++p) {
      for (size_t k = 0; k < kOutcomeKinds; ++k) {
        other[p][k] += s.untracked[p][k];
      }
    }
    sum.ready += s.ready;
    sum.retry_waiting += s.retry_waiting;
    sum.in_flight += s.in_flight;
    sum.connections += s.connections;
    sum.connecting += s.connecting;
    sum.dns_entries += s.dns_entries;
    sum.dns_hits += s.dns_hits;
    sum.dns_queries += s.dns_queries;
    sum.spool_bytes += s.spool_bytes;
    sum.fsync.add(s.fsync);
  }
  // "other": every destination without a label, plus the labels' bases.
  for (const auto& [key, c] : merged) {
    auto it = labels_.find(key);
    for (size_t k = 0; k < kOutcomeKinds && key.first < pools; ++k) {
      other[key.first][k] += it == labels_.end() ? c[k] : it->second.base[k];
    }
  }
  assign_labels(merged, &other);
  other_shown_ = other;

  std::string out;
  out.reserve(4096 + labels_.size() * 256);
  family(out, "ringmail_recipient_outcomes_total", "counter",
         "Recipient outcomes by destination (recipient domain; \"other\" beyond "
         "http.metrics_destinations) and egress pool. deferred counts attempts, the others are "
         "final.");
  for (const auto& [key, l] : labels_) {
    auto it = merged.find(key);
    for (size_t k = 0; k < kOutcomeKinds; ++k) {
      uint64_t v = it == merged.end() ? 0 : it->second[k] - l.base[k];
      std::string labels = "outcome=\"";
      labels += kOutcomeNames[k];
      labels += "\",domain=\"";
      append_label_value(labels, key.second);
      labels += "\",pool=\"";
      append_label_value(labels, cfg.egress.pools[key.first].name);
      labels += '"';
      sample(out, "ringmail_recipient_outcomes_total", labels, v);
    }
  }
  for (size_t p = 0; p < pools; ++p) {
    for (size_t k = 0; k < kOutcomeKinds; ++k) {
      std::string labels = "outcome=\"";
      labels += kOutcomeNames[k];
      labels += "\",domain=\"other\",pool=\"";
      append_label_value(labels, cfg.egress.pools[p].name);
      labels += '"';
      sample(out, "ringmail_recipient_outcomes_total", labels, other[p][k]);
    }
  }
  Runtime::Totals t = rt_.totals();
  family(out, "ringmail_recipients_dropped_total", "counter",
         "Recipients removed from the queue by an operator (drop-batch).");
  sample(out, "ringmail_recipients_dropped_total", "", t.dropped);
  family(out, "ringmail_queue_recipients", "gauge",
         "Recipients not yet final: ready (queued for a transaction), retry_waiting (deferred, "
         "waiting for their retry time), in_flight (in a transaction).");
  sample(out, "ringmail_queue_recipients", "state=\"ready\"", sum.ready);
  sample(out, "ringmail_queue_recipients", "state=\"retry_waiting\"", sum.retry_waiting);
  sample(out, "ringmail_queue_recipients", "state=\"in_flight\"", sum.in_flight);
  family(out, "ringmail_queued_bytes", "gauge",
         "Memory charged to the limits.max_queued_bytes budget (bodies and recipient state).");
  sample(out, "ringmail_queued_bytes", "", t.queued_bytes);
  family(out, "ringmail_smtp_connections", "gauge",
         "Outgoing SMTP connections: open (ready or in use) and connecting (TCP, greeting, EHLO, "
         "STARTTLS, AUTH).");
  sample(out, "ringmail_smtp_connections", "state=\"open\"", sum.connections - sum.connecting);
  sample(out, "ringmail_smtp_connections", "state=\"connecting\"", sum.connecting);
  family(out, "ringmail_smtp_connections_opened_total", "counter",
         "Outgoing SMTP connections started.");
  sample(out, "ringmail_smtp_connections_opened_total", "", t.connections_opened);
  family(out, "ringmail_smtp_transactions_total", "counter", "SMTP transactions started.");
  sample(out, "ringmail_smtp_transactions_total", "", t.transactions);
  family(out, "ringmail_dns_cache_entries", "gauge", "Names in the DNS caches of all shards.");
  sample(out, "ringmail_dns_cache_entries", "", sum.dns_entries);
  family(
      out, "ringmail_dns_cache_hits_total", "counter",
      "DNS lookups answered from the cache (lookups that join a query in flight are not counted).");
  sample(out, "ringmail_dns_cache_hits_total", "", sum.dns_hits);
  family(out, "ringmail_dns_queries_total", "counter", "DNS queries sent to resolvers.");
  sample(out, "ringmail_dns_queries_total", "", sum.dns_queries);
  family(out, "ringmail_spool_written_bytes_total", "counter", "Bytes written to spool segments.");
  sample(out, "ringmail_spool_written_bytes_total", "", sum.spool_bytes);
  family(out, "ringmail_spool_errors_total", "counter", "Failed spool writes and fsyncs.");
  sample(out, "ringmail_spool_errors_total", "", t.spool_errors);
  family(out, "ringmail_spool_fsync_duration_seconds", "histogram",
         "Latency of the spool's data fsyncs (group commits) that succeeded.");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < sum.fsync.buckets.size(); ++i) {
    cumulative += sum.fsync.buckets[i];
    std::string le = "le=\"";
    if (i < kFsyncBucketBounds.size()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", kFsyncBucketBounds[i]);
      le += buf;
    } else {
      le += "+Inf";
    }
    le += '"';
    sample(out, "ringmail_spool_fsync_duration_seconds_bucket", le, cumulative);
  }
  sample_double(out, "ringmail_spool_fsync_duration_seconds_sum", sum.fsync.sum_seconds);
  sample(out, "ringmail_spool_fsync_duration_seconds_count", "", sum.fsync.count);

  uint64_t batches[kBatchSources][kAckStatuses] = {};
  uint64_t tls[4] = {};
  for (uint32_t i = 0; i < rt_.shard_count(); ++i) {
    ShardStats& st = rt_.shard(i).stats();
    for (size_t s = 0; s < kBatchSources; ++s) {
      for (size_t a = 0; a < kAckStatuses; ++a) {
        batches[s][a] += st.batches[s][a].load(std::memory_order_relaxed);
      }
    }
    tls[0] += st.tls_client_ok.load(std::memory_order_relaxed);
    tls[1] += st.tls_client_failed.load(std::memory_order_relaxed);
    tls[2] += st.tls_server_ok.load(std::memory_order_relaxed);
    tls[3] += st.tls_server_failed.load(std::memory_order_relaxed);
  }
  family(out, "ringmail_ingest_batches_total", "counter",
         "Batches answered, by entry point (socket, http, submission) and acknowledgement "
         "status.");
  for (size_t s = 0; s < kBatchSources; ++s) {
    for (size_t a = 0; a < kAckStatuses; ++a) {
      std::string labels = "source=\"";
      labels += kSourceNames[s];
      labels += "\",status=\"";
      labels += kStatusNames[a];
      labels += '"';
      sample(out, "ringmail_ingest_batches_total", labels, batches[s][a]);
    }
  }
  family(out, "ringmail_tls_handshakes_total", "counter",
         "TLS handshakes by side (client: delivery; server: submission listeners) and result.");
  sample(out, "ringmail_tls_handshakes_total", "side=\"client\",result=\"ok\"", tls[0]);
  sample(out, "ringmail_tls_handshakes_total", "side=\"client\",result=\"failed\"", tls[1]);
  sample(out, "ringmail_tls_handshakes_total", "side=\"server\",result=\"ok\"", tls[2]);
  sample(out, "ringmail_tls_handshakes_total", "side=\"server\",result=\"failed\"", tls[3]);
  return out;
}

}  // namespace ringmail::engine
