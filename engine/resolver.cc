#include "engine/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "engine/log.h"
#include "proto/address.h"

namespace ringmail::engine {
namespace {

using proto::dns::kTypeA;
using proto::dns::kTypeAaaa;
using proto::dns::kTypeMx;

struct QueryCtx {
  DnsClient* client;
  DnsClient::Callback cb;
};

std::string ares_error_text(int status) {
  switch (status) {
    case ARES_ESERVFAIL:
      return "the DNS server answered SERVFAIL";
    case ARES_EREFUSED:
      return "the DNS server REFUSED the query";
    case ARES_ETIMEOUT:
      return "no answer from the DNS servers (timeout)";
    case ARES_ECONNREFUSED:
      // c-ares 1.18 also ends a query this way after dns.tries SERVFAIL or
      // REFUSED answers (it moves on to the next server on each).
      return "no usable answer from the DNS servers (SERVFAIL or REFUSED answers, or a "
             "refused connection)";
    case ARES_EFORMERR:
      return "the DNS server answered FORMERR";
    case ARES_ENOTIMP:
      return "the DNS server answered NOTIMP";
    case ARES_EBADRESP:
      return "malformed DNS answer";
    default:
      return std::string("DNS error: ") + ares_strerror(status);
  }
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

std::string format_sockaddr(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "?";
}

// ---------------------------------------------------------------------------
// DnsClient

DnsClient::DnsClient(Ring& ring, const DnsConfig& config) : ring_(ring), config_(config) {}

DnsClient::~DnsClient() {
  destroying_ = true;
  if (channel_ != nullptr) {
    ares_destroy(channel_);  // pending callbacks run with ARES_EDESTRUCTION
  }
  // The shard destroys its ring right after this and reaps nothing more,
  // so armed polls never complete: every watch is freed here.
  for (auto& [fd, w] : watches_) {
    delete w;
  }
}

Result<void> DnsClient::init() {
  static std::once_flag once;
  static int lib_rc = ARES_SUCCESS;
  std::call_once(once, [] { lib_rc = ares_library_init(ARES_LIB_INIT_ALL); });
  if (lib_rc != ARES_SUCCESS) {
    return make_error(Errc::kIo, std::string("c-ares init: ") + ares_strerror(lib_rc));
  }
  ares_options o;
  std::memset(&o, 0, sizeof o);
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
             ARES_OPT_EDNSPSZ;
  o.sock_state_cb = &DnsClient::sock_state;
  o.sock_state_cb_data = this;
  o.timeout = static_cast<int>(config_.timeout.count());
  o.tries = static_cast<int>(config_.tries);
  // EDNS0 for large MX sets; c-ares retries over TCP when an answer is
  // still truncated. NOSEARCH: names are absolute, no search list.
  o.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH;
  o.ednspsz = 1232;
  int rc = ares_init_options(&channel_, &o, mask);
  if (rc != ARES_SUCCESS) {
    return make_error(Errc::kIo, std::string("c-ares channel: ") + ares_strerror(rc));
  }
  if (!config_.servers.empty()) {
    std::string csv;
    for (const auto& s : config_.servers) {
      if (!csv.empty()) {
        csv += ",";
      }
      csv += s;
    }
    rc = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (rc != ARES_SUCCESS) {
      return make_error(Errc::kConfig, "dns.servers: " + std::string(ares_strerror(rc)));
    }
  }
  return ok_result();
}

void DnsClient::sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  auto* c = static_cast<DnsClient*>(data);
  auto it = c->watches_.find(fd);
  if (readable == 0 && writable == 0) {
    if (it == c->watches_.end()) {
      return;
    }
    Watch* w = it->second;
    c->watches_.erase(it);
    w->dead = true;
    if (w->armed) {
      c->ring_.poll_remove(w, nullptr);  // its CQE frees it
      // c-ares closes the socket as soon as this returns: submit now, so a
      // poll queued in this iteration holds this socket, not a new one
      // that reuses the descriptor number.
      c->ring_.submit();
    } else if (!w->in_callback) {
      delete w;
    }
    return;
  }
  Watch* w;
  if (it == c->watches_.end()) {
    w = new Watch();
    w->client = c;
    w->fd = fd;
    c->watches_.emplace(fd, w);
  } else {
    w = it->second;
  }
  w->want_read = readable != 0;
  w->want_write = writable != 0;
  unsigned mask = (w->want_read ? POLLIN : 0) | (w->want_write ? POLLOUT : 0);
  if (!w->armed && !w->in_callback) {
    c->arm(w);
  } else if (w->armed && mask != w->armed_mask) {
    c->ring_.poll_remove(w, nullptr);  // re-armed with the new mask on its CQE
  }
}

void DnsClient::arm(Watch* w) {
  w->armed_mask = (w->want_read ? POLLIN : 0) | (w->want_write ? POLLOUT : 0);
  w->armed = true;
  ring_.poll_add(w->fd, w->armed_mask, w);
}

void DnsClient::Watch::complete(int res, uint32_t /*flags*/) {
  armed = false;
  if (dead) {
    delete this;
    return;
  }
  DnsClient* c = client;
  if (res > 0) {
    in_callback = true;
    ares_socket_t rfd = (res & (POLLIN | POLLERR | POLLHUP)) != 0 ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = (res & (POLLOUT | POLLERR)) != 0 ? fd : ARES_SOCKET_BAD;
    ares_process_fd(c->channel_, rfd, wfd);
    in_callback = false;
  }
  if (dead) {
    delete this;
  } else {
    c->arm(this);
  }
  c->after_call();
}

void DnsClient::query(const std::string& name, uint16_t type, Callback cb) {
  Pending p{name, type, std::move(cb)};
  if (inflight_ >= config_.max_inflight) {
    waiting_.push_back(std::move(p));
    return;
  }
  start(std::move(p));
}

void DnsClient::start(Pending p) {
  ++inflight_;
  ++sent_;
  auto* ctx = new QueryCtx{this, std::move(p.cb)};
  ares_query(channel_, p.name.c_str(), ns_c_in, p.type, &DnsClient::on_answer, ctx);
  after_call();
}

void DnsClient::on_answer(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
  std::unique_ptr<QueryCtx> ctx(static_cast<QueryCtx*>(arg));
  DnsClient* c = ctx->client;
  --c->inflight_;
  if (c->destroying_ || status == ARES_EDESTRUCTION) {
    return;
  }
  ctx->cb(status, abuf, alen);
  while (!c->waiting_.empty() && c->inflight_ < c->config_.max_inflight) {
    Pending p = std::move(c->waiting_.front());
    c->waiting_.pop_front();
    c->start(std::move(p));
  }
}

void DnsClient::after_call() {
  timeval tv;
  timeval* t = ares_timeout(channel_, nullptr, &tv);
  if (t == nullptr) {
    deadline_.reset();
    return;
  }
  deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(t->tv_sec) +
              std::chrono::microseconds(t->tv_usec);
}

std::optional<std::chrono::steady_clock::time_point> DnsClient::next_deadline() const {
  return deadline_;
}

void DnsClient::process_timeouts() {
  if (!deadline_ || std::chrono::steady_clock::now() < *deadline_) {
    return;
  }
  ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  after_call();
}

// ---------------------------------------------------------------------------
// DnsCache

DnsCache::DnsCache(DnsClient& client, const Clock& clock, const DnsConfig& config)
    : client_(client), clock_(clock), config_(config) {}

Millis DnsCache::clamp_ttl(uint32_t seconds) const {
  Millis ttl(static_cast<int64_t>(seconds) * 1000);
  return std::clamp(ttl, config_.ttl_floor, config_.ttl_ceiling);
}

void DnsCache::lookup(const std::string& name, uint16_t type, Callback cb) {
  std::string key = std::to_string(type) + ":" + name;
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (!e.ready) {
      e.waiters.push_back(std::move(cb));
      return;
    }
    if (e.expires > clock_.now()) {
      ++hits_;
      DnsResult copy = e.result;
      cb(copy);
      return;
    }
  }
  Entry& e = entries_[key];
  e.ready = false;
  e.waiters.push_back(std::move(cb));
  evict();
  client_.query(name, type,
                [this, key, name, type](int status, const unsigned char* abuf, int alen) {
                  complete(key, status, abuf, alen, name, type);
                });
}

void DnsCache::complete(const std::string& key, int status, const unsigned char* abuf, int alen,
                        const std::string& name, uint16_t type) {
  DnsResult r;
  Millis ttl = config_.error_ttl;
  bool parse = abuf != nullptr && alen > 0 &&
               (status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND);
  if (parse) {
    auto a = proto::dns::parse_answer(std::span<const uint8_t>(abuf, static_cast<size_t>(alen)),
                                      name, type);
    if (!a.ok()) {
      r.status = DnsResult::Status::kTempFail;
      r.error = a.error().message;
    } else {
      r.answer = std::move(*a);
      auto neg = r.answer.has_negative_ttl
                     ? std::min(clamp_ttl(r.answer.negative_ttl), config_.negative_ttl)
                     : config_.negative_ttl;
      if (r.answer.rcode == static_cast<uint8_t>(proto::dns::Rcode::kNxDomain)) {
        r.status = DnsResult::Status::kNxDomain;
        ttl = neg;
      } else if (r.answer.rcode != 0) {
        r.status = DnsResult::Status::kTempFail;
        r.error = "the DNS server answered rcode " + std::to_string(r.answer.rcode);
      } else if (r.answer.has_records) {
        r.status = DnsResult::Status::kOk;
        ttl = clamp_ttl(r.answer.min_ttl);
      } else if (r.answer.final_name != proto::dns::canonical_name(name) &&
                 !r.answer.has_negative_ttl) {
        // An alias whose target came without records and without an SOA
        // saying it has none: a chain the resolver could not finish (a loop
        // across answers, a lame target). Not a verdict on the domain.
        r.status = DnsResult::Status::kTempFail;
        r.error =
            "the CNAME chain of " + name + " ends at " + r.answer.final_name + " without an answer";
      } else {
        r.status = DnsResult::Status::kNoData;
        ttl = neg;
      }
    }
  } else {
    r.status = DnsResult::Status::kTempFail;
    r.error = ares_error_text(status);
  }
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    return;
  }
  r.expires = clock_.now() + ttl;
  it->second.ready = true;
  it->second.result = r;
  it->second.expires = r.expires;
  std::vector<Callback> waiters;
  waiters.swap(it->second.waiters);
  for (auto& w : waiters) {
    w(r);
  }
}

void DnsCache::evict() {
  if (entries_.size() <= config_.cache_size) {
    return;
  }
  TimePoint now = clock_.now();
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.ready && it->second.expires <= now) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto it = entries_.begin(); it != entries_.end() && entries_.size() > config_.cache_size;) {
    if (it->second.ready) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// RouteResolver

struct RouteResolver::Job {
  Route route;
  std::string domain;
  Callback cb;
  size_t target = 0;
  std::vector<Candidate> candidates;
  TimePoint expires{};
  bool have_expiry = false;
  std::optional<proto::Reply> bounce;  // a permanent verdict on the recipient domain
  std::optional<proto::Reply> defer;   // the first temporary failure
  std::string note;

  void expire_at(TimePoint t) {
    if (!have_expiry || t < expires) {
      expires = t;
      have_expiry = true;
    }
  }
};

RouteResolver::RouteResolver(DnsCache& cache, const Clock& clock, const Config& config,
                             uint64_t seed)
    : cache_(cache), clock_(clock), config_(&config), rng_state_(seed | 1) {}

void RouteResolver::resolve(const Route& route, const std::string& domain, Callback cb) {
  auto job = std::make_shared<Job>();
  job->route = route;
  job->domain = domain;
  job->cb = std::move(cb);
  resolve_target(job, 0);
}

void RouteResolver::resolve_target(const std::shared_ptr<Job>& job, size_t index) {
  job->target = index;
  if (index >= job->route.hosts.size()) {
    RouteResolution res;
    res.note = job->note;
    res.expires = job->have_expiry ? job->expires : clock_.now() + config_->dns.ttl_ceiling;
    if (!job->candidates.empty()) {
      res.kind = RouteResolution::Kind::kOk;
      res.candidates = std::move(job->candidates);
      if (res.candidates.size() > config_->dns.max_addresses) {
        res.candidates.resize(config_->dns.max_addresses);
      }
    } else if (job->bounce && !job->defer) {
      res.kind = RouteResolution::Kind::kBounce;
      res.reply = *job->bounce;
    } else {
      res.kind = RouteResolution::Kind::kDefer;
      res.reply =
          job->defer ? *job->defer : proto::make_reply(451, "4.4.3 no route to " + job->domain);
    }
    job->cb(std::move(res));
    return;
  }
  const Endpoint& ep = job->route.hosts[index];
  switch (ep.kind) {
    case Endpoint::Kind::kAddress: {
      Candidate c;
      c.tier = static_cast<uint32_t>(index) << 16;
      c.mx = ep.host;
      c.addr = ep.addr;
      c.addr_len = ep.addr_len;
      job->candidates.push_back(c);
      finish_target(job);
      return;
    }
    case Endpoint::Kind::kRecipientMx:
      resolve_mx(job, job->domain, config_->delivery.port);
      return;
    case Endpoint::Kind::kMx:
      resolve_mx(job, ep.host, ep.port);
      return;
    case Endpoint::Kind::kHost:
      resolve_hosts(job, {proto::dns::MxRecord{0, ep.host}}, ep.port, true);
      return;
  }
}

void RouteResolver::finish_target(const std::shared_ptr<Job>& job) {
  resolve_target(job, job->target + 1);
}

void RouteResolver::resolve_mx(const std::shared_ptr<Job>& job, const std::string& name,
                               uint16_t port) {
  const bool recipient = job->route.hosts[job->target].kind == Endpoint::Kind::kRecipientMx;
  cache_.lookup(name, kTypeMx, [this, job, name, port, recipient](const DnsResult& r) {
    job->expire_at(r.expires);
    auto verdict = [&](uint16_t code, const std::string& text) {
      if (recipient) {
        job->bounce = proto::make_reply(code, text);
      } else if (!job->defer) {
        size_t sp = text.find(' ');
        job->defer =
            proto::make_reply(451, "4.4.3 route " + name + ": " +
                                       (sp == std::string::npos ? text : text.substr(sp + 1)));
      }
    };
    switch (r.status) {
      case DnsResult::Status::kTempFail:
        if (!job->defer) {
          job->defer =
              proto::make_reply(451, "4.4.3 MX lookup for " + name + " failed: " + r.error);
        }
        finish_target(job);
        return;
      case DnsResult::Status::kNxDomain:
        verdict(550, "5.1.2 the domain " + name + " does not exist (DNS NXDOMAIN)");
        finish_target(job);
        return;
      case DnsResult::Status::kNoData:
        // RFC 5321 5.1: no MX records, so the domain itself is the implicit MX.
        resolve_hosts(job, {proto::dns::MxRecord{0, r.answer.final_name}}, port, true);
        return;
      case DnsResult::Status::kOk:
        break;
    }
    std::vector<proto::dns::MxRecord> mx = r.answer.mx;
    bool null_mx = false;
    std::erase_if(mx, [&](const proto::dns::MxRecord& m) {
      null_mx = null_mx || m.exchange.empty();
      return m.exchange.empty();
    });
    if (mx.empty() && null_mx) {
      verdict(556, "5.1.10 " + name + " does not accept mail (null MX, RFC 7505)");
      finish_target(job);
      return;
    }
    // Preference order; random order among equal preferences (RFC 5321 5.1):
    // sort on (preference, random key).
    std::vector<std::pair<uint64_t, proto::dns::MxRecord>> keyed;
    keyed.reserve(mx.size());
    for (auto& m : mx) {
      rng_state_ ^= rng_state_ << 13;
      rng_state_ ^= rng_state_ >> 7;
      rng_state_ ^= rng_state_ << 17;
      keyed.emplace_back((uint64_t{m.preference} << 48) | (rng_state_ >> 16), std::move(m));
    }
    std::sort(keyed.begin(), keyed.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    mx.clear();
    for (auto& k : keyed) {
      if (mx.size() >= config_->dns.max_mx) {
        job->note += "only the first " + std::to_string(config_->dns.max_mx) + " of " +
                     std::to_string(keyed.size()) + " MX hosts are used; ";
        break;
      }
      mx.push_back(std::move(k.second));
    }
    resolve_hosts(job, std::move(mx), port, false);
  });
}

bool RouteResolver::usable(const sockaddr_storage& ss) const {
  if (ss.ss_family == AF_INET) {
    uint32_t a = ntohl(reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr);
    if (a == 0 || (a >> 28) == 0xE || a == 0xFFFFFFFFu) {
      return false;  // 0.0.0.0, multicast, broadcast
    }
    return config_->dns.allow_loopback || (a >> 24) != 127;
  }
  const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
  if (IN6_IS_ADDR_UNSPECIFIED(a6) || IN6_IS_ADDR_MULTICAST(a6)) {
    return false;
  }
  return config_->dns.allow_loopback || !IN6_IS_ADDR_LOOPBACK(a6);
}

void RouteResolver::resolve_hosts(const std::shared_ptr<Job>& job,
                                  std::vector<proto::dns::MxRecord> hosts, uint16_t port,
                                  bool implicit) {
  struct HostState {
    std::string name;
    uint16_t preference = 0;
    std::optional<DnsResult> v4, v6;
    bool want_v4 = false, want_v6 = false;
  };
  struct Gather {
    std::vector<HostState> hosts;
    size_t pending = 0;
  };
  auto g = std::make_shared<Gather>();
  const AddressPreference pref = config_->dns.prefer;
  for (auto& h : hosts) {
    if (is_ip_literal(h.exchange)) {
      job->note += "MX host " + h.exchange + " is an IP address, not a host name: skipped; ";
      continue;
    }
    if (!proto::validate_domain(h.exchange).ok()) {
      job->note += "MX host " + h.exchange + " is not a valid host name: skipped; ";
      continue;
    }
    HostState s;
    s.name = h.exchange;
    s.preference = h.preference;
    s.want_v4 = pref != AddressPreference::kIpv6Only;
    s.want_v6 = pref != AddressPreference::kIpv4Only;
    g->pending += (s.want_v4 ? 1 : 0) + (s.want_v6 ? 1 : 0);
    g->hosts.push_back(std::move(s));
  }
  const bool recipient = job->route.hosts[job->target].kind == Endpoint::Kind::kRecipientMx;
  auto assemble = [this, job, g, port, implicit, recipient]() {
    bool temp = false, loopback_only = false;
    std::string temp_why;
    size_t before = job->candidates.size();
    for (auto& h : g->hosts) {
      auto add_v4 = [&] {
        if (!h.v4) {
          return;
        }
        job->expire_at(h.v4->expires);
        if (h.v4->status == DnsResult::Status::kTempFail) {
          temp = true;
          temp_why = h.name + ": " + h.v4->error;
        }
        for (const auto& a : h.v4->answer.a) {
          Candidate c;
          c.mx = h.name;
          c.preference = h.preference;
          c.tier = (static_cast<uint32_t>(job->target) << 16) | h.preference;
          auto* sin = reinterpret_cast<sockaddr_in*>(&c.addr);
          sin->sin_family = AF_INET;
          sin->sin_port = htons(port);
          std::memcpy(&sin->sin_addr, a.data(), 4);
          c.addr_len = sizeof(sockaddr_in);
          if (usable(c.addr)) {
            job->candidates.push_back(c);
          } else {
            loopback_only = true;
          }
        }
      };
      auto add_v6 = [&] {
        if (!h.v6) {
          return;
        }
        job->expire_at(h.v6->expires);
        if (h.v6->status == DnsResult::Status::kTempFail) {
          temp = true;
          temp_why = h.name + ": " + h.v6->error;
        }
        for (const auto& a : h.v6->answer.aaaa) {
          Candidate c;
          c.mx = h.name;
          c.preference = h.preference;
          c.tier = (static_cast<uint32_t>(job->target) << 16) | h.preference;
          auto* sin6 = reinterpret_cast<sockaddr_in6*>(&c.addr);
          sin6->sin6_family = AF_INET6;
          sin6->sin6_port = htons(port);
          std::memcpy(&sin6->sin6_addr, a.data(), 16);
          c.addr_len = sizeof(sockaddr_in6);
          if (usable(c.addr)) {
            job->candidates.push_back(c);
          } else {
            loopback_only = true;
          }
        }
      };
      if (config_->dns.prefer == AddressPreference::kIpv6) {
        add_v6();
        add_v4();
      } else {
        add_v4();
        add_v6();
      }
    }
    if (job->candidates.size() == before) {
      std::string what = implicit ? job->domain + " has no MX and no address record"
                                  : "no address for the mail servers of " + job->domain;
      if (temp) {
        if (!job->defer) {
          job->defer = proto::make_reply(
              451, "4.4.3 address lookup failed: " + what + " (" + temp_why + ")");
        }
      } else if (loopback_only) {
        if (recipient) {
          job->bounce =
              proto::make_reply(554, "5.4.4 the mail servers of " + job->domain +
                                         " point to unusable addresses (loopback or unspecified)");
        } else if (!job->defer) {
          job->defer = proto::make_reply(451, "4.4.3 route points to a loopback address");
        }
      } else if (recipient) {
        std::string note =
            job->note.empty() ? "" : " (" + job->note.substr(0, job->note.size() - 2) + ")";
        job->bounce = proto::make_reply(550, (implicit ? "5.1.2 " : "5.4.4 ") + what + note);
      } else if (!job->defer) {
        job->defer = proto::make_reply(451, "4.4.3 " + what);
      }
    }
    finish_target(job);
  };
  if (g->pending == 0) {
    assemble();
    return;
  }
  for (size_t i = 0; i < g->hosts.size(); ++i) {
    auto on = [g, i, assemble](bool v6, const DnsResult& r) {
      (v6 ? g->hosts[i].v6 : g->hosts[i].v4) = r;
      if (--g->pending == 0) {
        assemble();
      }
    };
    if (g->hosts[i].want_v4) {
      cache_.lookup(g->hosts[i].name, kTypeA, [on](const DnsResult& r) { on(false, r); });
    }
    if (g->hosts[i].want_v6) {
      cache_.lookup(g->hosts[i].name, kTypeAaaa, [on](const DnsResult& r) { on(true, r); });
    }
  }
}

void rotate_equal_preference(std::vector<Candidate>& candidates, uint64_t turn) {
  size_t i = 0;
  while (i < candidates.size()) {
    size_t j = i + 1;
    while (j < candidates.size() && candidates[j].tier == candidates[i].tier) {
      ++j;
    }
    // [i, j) is one tier; its hosts in order of first appearance.
    std::vector<std::string_view> hosts;
    for (size_t k = i; k < j; ++k) {
      if (std::find(hosts.begin(), hosts.end(), candidates[k].mx) == hosts.end()) {
        hosts.push_back(candidates[k].mx);
      }
    }
    if (hosts.size() > 1) {
      std::vector<Candidate> run;
      run.reserve(j - i);
      const size_t first = static_cast<size_t>(turn % hosts.size());
      for (size_t h = 0; h < hosts.size(); ++h) {
        std::string_view host = hosts[(first + h) % hosts.size()];
        for (size_t k = i; k < j; ++k) {
          if (candidates[k].mx == host) {
            run.push_back(candidates[k]);
          }
        }
      }
      std::move(run.begin(), run.end(), candidates.begin() + static_cast<std::ptrdiff_t>(i));
    }
    i = j;
  }
}

}  // namespace ringmail::engine
