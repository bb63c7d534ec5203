// End to end: MX routing against real DNS on loopback. dnsmasq (started by
// the test on an ephemeral port) serves well-formed test zones whose MX hosts
// resolve to 127.0.0.x addresses where ringmail-sink listens; FakeDns
// (fake_dns.h) serves hostile answers. Every case must end in a delivered,
// bounced or deferred event with its reason within a bounded time.
#include <gtest/gtest.h>

#include <pwd.h>
#include <sys/prctl.h>

#include <fstream>
#include <regex>
#include <set>

#include "engine/clock.h"
#include "proto/dns_answer.h"
#include "tests/e2e/fake_dns.h"
#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

using std::chrono::seconds;
namespace wire = dns;

constexpr milliseconds kWait(20'000);  // upper bound for any single outcome

std::string dnsmasq_path() {
  return env_or("DNSMASQ", "/usr/sbin/dnsmasq");
}

std::string user_name() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr ? pw->pw_name : "root";
}

/// dnsmasq serving the *.test zone from command-line records; unknown
/// *.test names are NXDOMAIN (--local=/test/). It runs under a small sh
/// wrapper that gets SIGTERM when the test process dies (PR_SET_PDEATHSIG,
/// which does not survive dnsmasq's own start-up) and then kills it, so
/// even a crashed test leaves no DNS server behind.
class Dnsmasq {
 public:
  Dnsmasq() = default;
  Dnsmasq(const Dnsmasq&) = delete;
  Dnsmasq& operator=(const Dnsmasq&) = delete;
  ~Dnsmasq() { stop(); }

  /// `records`: dnsmasq options such as "--mx-host=a.test,mx1.a.test,10".
  /// `port` 0 picks a free one (retried if it was taken meanwhile).
  bool start(const std::vector<std::string>& records, uint16_t port = 0) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = port != 0 ? port : free_port(SOCK_DGRAM);
      std::vector<std::string> argv = {dnsmasq_path(),
                                       "--keep-in-foreground",
                                       "--port=" + std::to_string(port_),
                                       "--listen-address=127.0.0.1",
                                       "--bind-interfaces",
                                       "--no-resolv",
                                       "--no-hosts",
                                       "--log-queries",
                                       "--log-facility=" + log_file(),
                                       "--local=/test/",
                                       "--pid-file=" + dir_.file("dnsmasq.pid"),
                                       "--user=" + user_name()};
      argv.insert(argv.end(), records.begin(), records.end());
      if (!spawn(argv)) {
        error_ = "cannot run " + argv[0];
        return false;
      }
      bool answered = eventually([&] { return !running() || probe(); }, kWait);
      if (answered && running()) {
        return true;
      }
      stop();
      error_ = "dnsmasq did not start: " + read_file(dir_.file("dnsmasq.err")).value_or("");
      if (port != 0) {
        return false;
      }
    }
    return false;
  }

  uint16_t port() const { return port_; }
  std::string server() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& error() const { return error_; }
  std::string log() const { return read_file(log_file()).value_or(""); }

  /// Queries dnsmasq logged for `type` ("MX", "A", "AAAA") and `name`.
  size_t queries(const std::string& type, const std::string& name) const {
    std::string needle = "query[" + type + "] " + name + " from ";
    std::string text = log();
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  std::string log_file() const { return dir_.file("dnsmasq.log"); }

  /// fork + exec of the wrapper, stdout/stderr to a file; only
  /// async-signal-safe calls between the two (engine threads may run).
  bool spawn(const std::vector<std::string>& argv) {
    std::vector<std::string> args = {
        "/bin/sh", "-c",
        R"(trap 'kill -9 "$c" 2>/dev/null; wait "$c"; exit 0' TERM; "$@" & c=$!; wait "$c")", "sh"};
    args.insert(args.end(), argv.begin(), argv.end());
    std::vector<char*> cargv;
    for (auto& a : args) {
      cargv.push_back(a.data());
    }
    cargv.push_back(nullptr);
    const std::string out = dir_.file("dnsmasq.err");
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      return false;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) {
        ::_exit(127);  // the test died before prctl
      }
      int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
    pid_ = pid;
    return true;
  }
  bool running() {
    int st = 0;
    if (pid_ > 0 && ::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;  // reaped: never signal a recycled pid
    }
    return pid_ > 0;
  }
  /// SIGTERM to the wrapper, which kills dnsmasq; SIGKILL if it hangs.
  void stop() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGTERM);
    if (!eventually([&] { return !running(); }, milliseconds(5'000))) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }

  /// One A query for probe.test; true when any answer came back.
  bool probe() const { return dns_server_answers(port_, "probe.test"); }

  TempDir dir_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
  std::string error_;
};

/// ringmail-sink processes on several addresses sharing one port (the MX
/// delivery port is one port for all MX hosts).
class Sinks {
 public:
  /// `hosts`: "127.0.0.2", "[::1]", ...
  bool start(const std::vector<std::string>& hosts) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      sinks_.clear();
      port_ = 0;
      bool ok = true;
      for (const auto& h : hosts) {
        auto s = std::make_unique<SinkProcess>();
        if (!s->start({"--listen", h + ":" + std::to_string(port_)})) {
          error_ = h + ": " + s->error();
          ok = false;
          break;
        }
        port_ = s->port();
        sinks_.push_back(std::move(s));
      }
      if (ok) {
        return true;
      }
    }
    return false;
  }
  uint16_t port() const { return port_; }
  SinkProcess& operator[](size_t i) { return *sinks_.at(i); }
  const std::string& error() const { return error_; }
  /// The sink's "connections" count; 0 before it wrote its stats.
  double connections(size_t i) { return std::max(0.0, sinks_.at(i)->stat("connections")); }

 private:
  std::vector<std::unique_ptr<SinkProcess>> sinks_;
  uint16_t port_ = 0;
  std::string error_;
};

/// The engine configuration for MX routing through one DNS server.
struct MxConfig {
  std::string dns_server;
  uint16_t smtp_port = 0;
  uint32_t shards = 1;
  std::string dns;             // extra [dns] lines
  std::string domains;         // [routing.domains] lines
  std::string delivery;        // extra [delivery] lines
  std::string connect = "1s";  // delivery.timeouts.connect

  std::string toml() const {
    std::string t = "[engine]\nshards = " + std::to_string(shards) + "\n";
    t += "[routing]\ndefault = \"mx\"\n";
    if (!domains.empty()) {
      t += "[routing.domains]\n" + domains;
    }
    t += "[delivery]\nport = " + std::to_string(smtp_port) + "\n" + delivery;
    t += "[delivery.timeouts]\nconnect = \"" + connect + "\"\n";
    t += "[dns]\nservers = [\"" + dns_server + "\"]\nallow_loopback = true\n" + dns;
    t += "[retry]\nschedule = [\"1m\"]\njitter_percent = 0\n";
    return t;
  }
};

/// EmbeddedEngine whose engine stops before its event collector goes away
/// (shutdown may still emit events).
struct TestEngine : EmbeddedEngine {
  ~TestEngine() { engine.reset(); }
};

Ack submit(Engine& e, std::vector<std::string> rcpts) {
  Batch b;
  b.sender = "sender@example.test";
  b.message = message_of(600);
  b.recipients = std::move(rcpts);
  return e.submit(b);
}

::testing::AssertionResult started(const Result<void>& r) {
  if (r.ok()) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "engine start: " << r.error().message;
}

/// Submits `rcpt` alone and expects it accepted.
void submit_one(Engine& e, const std::string& rcpt) {
  Ack ack = submit(e, {rcpt});
  EXPECT_EQ(ack.accepted, 1u) << rcpt << ": " << ack.reason;
}

/// The only event of `rcpt`; a default Ev (code 0) when there is not
/// exactly one.
EventCollector::Ev only_event(EventCollector& ev, const std::string& rcpt) {
  auto v = ev.events(rcpt);
  EXPECT_EQ(v.size(), 1u) << rcpt;
  return v.size() == 1 ? v[0] : EventCollector::Ev{};
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string peer(const std::string& ip, uint16_t port) {
  return ip + ":" + std::to_string(port);
}

/// Advances `clock` by `step` and wakes the engine until `done` holds, at
/// most `rounds` times. One round is enough unless the test advanced the
/// clock between a deferred event and the retry it schedules (the event is
/// emitted first); then the retry is due one step later.
template <class F>
bool advance_until(engine::ManualClock& clock, Engine& e, seconds step, F done, int rounds = 4) {
  for (int i = 0; i < rounds; ++i) {
    clock.advance(step);
    engine::wake_for_test(e);
    if (eventually(done, milliseconds(1'000))) {
      return true;
    }
  }
  return false;
}

/// Connections are not reused across rounds, so every round resolves the
/// route (an idle connection kept from an earlier round skips DNS).
constexpr const char* kOneMessagePerConnection = "max_msgs_per_conn = 1\n";

// ---------------------------------------------------------------------------
// Well-formed zones, served by dnsmasq.

class MxRouting : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(have_program(dnsmasq_path())) << dnsmasq_path() << " missing";
  }
  /// Starts the engine against dns_ with sinks_' port.
  ::testing::AssertionResult start_engine(MxConfig cfg = {}, const engine::Clock* clock = nullptr) {
    if (cfg.dns_server.empty()) {
      cfg.dns_server = dns_.server();
    }
    cfg.smtp_port = sinks_.port();
    return started(engine_.start(cfg.toml(), clock));
  }

  Dnsmasq dns_;
  Sinks sinks_;
  engine::ManualClock clock_;  // for tests that pass it; outlives engine_
  TestEngine engine_;
};

TEST_F(MxRouting, LowestPreferenceGetsEverythingWhenAllAreUp) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2", "127.0.0.3"})) << sinks_.error();
  // The preferred MX is listed second, so answer order does not decide.
  ASSERT_TRUE(dns_.start(
      {"--mx-host=pref.test,mx2.pref.test,20", "--mx-host=pref.test,mx1.pref.test,10",
       "--host-record=mx1.pref.test,127.0.0.2", "--host-record=mx2.pref.test,127.0.0.3"}))
      << dns_.error();
  ASSERT_TRUE(start_engine());
  for (int i = 0; i < 5; ++i) {
    submit_one(*engine_.engine, "r" + std::to_string(i) + "@pref.test");
  }
  ASSERT_TRUE(engine_.events.wait_finals(5, kWait));
  for (int i = 0; i < 5; ++i) {
    auto ev = only_event(engine_.events, "r" + std::to_string(i) + "@pref.test");
    EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
    EXPECT_EQ(ev.mx, "mx1.pref.test");
    EXPECT_EQ(ev.peer, peer("127.0.0.2", sinks_.port()));
  }
  EXPECT_TRUE(sinks_[0].wait_stat("recipients", 5)) << sinks_[0].stats();
  EXPECT_EQ(sinks_.connections(1), 0.0) << sinks_[1].stats();
}

TEST_F(MxRouting, FallsBackToTheNextMxWhenTheFirstRefusesConnections) {
  ASSERT_TRUE(sinks_.start({"127.0.0.3"})) << sinks_.error();
  // Nothing listens on 127.0.0.4: the preferred MX refuses connections.
  ASSERT_TRUE(
      dns_.start({"--mx-host=fb.test,mx1.fb.test,10", "--mx-host=fb.test,mx2.fb.test,20",
                  "--host-record=mx1.fb.test,127.0.0.4", "--host-record=mx2.fb.test,127.0.0.3"}))
      << dns_.error();
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@fb.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@fb.test");  // no deferral on the way
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  EXPECT_EQ(ev.mx, "mx2.fb.test");
  EXPECT_EQ(ev.peer, peer("127.0.0.3", sinks_.port()));
  EXPECT_EQ(ev.attempt, 1u);
  EXPECT_TRUE(sinks_[0].wait_stat("recipients", 1)) << sinks_[0].stats();
}

TEST_F(MxRouting, EqualPreferencesAreUsedInRandomOrder) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2", "127.0.0.3"})) << sinks_.error();
  // 60 domains share two MX hosts of equal preference. The route of a
  // domain is resolved once, so each domain is one draw: with a fair
  // shuffle, all 60 on one host has probability 2^-59.
  constexpr int kDomains = 60;
  std::vector<std::string> records = {"--host-record=mxa.eq.test,127.0.0.2",
                                      "--host-record=mxb.eq.test,127.0.0.3"};
  for (int i = 0; i < kDomains; ++i) {
    std::string d = "eq" + std::to_string(i) + ".test";
    records.push_back("--mx-host=" + d + ",mxa.eq.test,10");
    records.push_back("--mx-host=" + d + ",mxb.eq.test,10");
  }
  ASSERT_TRUE(dns_.start(records)) << dns_.error();
  ASSERT_TRUE(start_engine());
  for (int i = 0; i < kDomains; ++i) {
    submit_one(*engine_.engine, "r@eq" + std::to_string(i) + ".test");
  }
  ASSERT_TRUE(engine_.events.wait_finals(kDomains, kWait));
  std::map<std::string, int> by_mx;
  for (int i = 0; i < kDomains; ++i) {
    auto ev = only_event(engine_.events, "r@eq" + std::to_string(i) + ".test");
    EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
    EXPECT_EQ(ev.peer, peer(ev.mx == "mxa.eq.test" ? "127.0.0.2" : "127.0.0.3", sinks_.port()))
        << ev.mx;
    ++by_mx[ev.mx];
  }
  EXPECT_GT(by_mx["mxa.eq.test"], 0);
  EXPECT_GT(by_mx["mxb.eq.test"], 0);
  EXPECT_EQ(by_mx["mxa.eq.test"] + by_mx["mxb.eq.test"], kDomains);
  EXPECT_TRUE(sinks_[0].wait_stat("recipients", by_mx["mxa.eq.test"])) << sinks_[0].stats();
  EXPECT_TRUE(sinks_[1].wait_stat("recipients", by_mx["mxb.eq.test"])) << sinks_[1].stats();
}

TEST_F(MxRouting, ConnectionsToOneDomainSpreadOverEqualPreferenceHosts) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2", "127.0.0.3"})) << sinks_.error();
  ASSERT_TRUE(dns_.start(
      {"--mx-host=spread.test,mxa.spread.test,10", "--mx-host=spread.test,mxb.spread.test,10",
       "--host-record=mxa.spread.test,127.0.0.2", "--host-record=mxb.spread.test,127.0.0.3"}))
      << dns_.error();
  // One domain, resolved once and cached; 1,000 recipients in 100
  // transactions over many short connections. Each connection starts at
  // the next host of equal preference, so both get a fair share.
  MxConfig cfg;
  cfg.delivery = "max_rcpts_per_txn = 10\nmax_msgs_per_conn = 2\nmax_conns_per_destination = 4\n";
  ASSERT_TRUE(start_engine(cfg));
  for (int b = 0; b < 10; ++b) {
    std::vector<std::string> rcpts;
    for (int i = 0; i < 100; ++i) {
      rcpts.push_back("r" + std::to_string(b * 100 + i) + "@spread.test");
    }
    ASSERT_EQ(submit(*engine_.engine, rcpts).accepted, 100u);
  }
  ASSERT_TRUE(engine_.events.wait_finals(1000, kWait));
  std::map<std::string, int> by_mx;
  for (const auto& [rcpt, evs] : engine_.events.all()) {
    ASSERT_EQ(evs.back().type, EventType::kDelivered) << rcpt << " " << evs.back().response;
    ++by_mx[evs.back().mx];
  }
  EXPECT_EQ(by_mx["mxa.spread.test"] + by_mx["mxb.spread.test"], 1000);
  EXPECT_GE(by_mx["mxa.spread.test"], 300) << by_mx["mxb.spread.test"];
  EXPECT_GE(by_mx["mxb.spread.test"], 300) << by_mx["mxa.spread.test"];
  EXPECT_GT(sinks_.connections(0), 0.0);
  EXPECT_GT(sinks_.connections(1), 0.0);
}

// A provider block of the rules applies to every domain whose MX hosts it
// recognises, once the route is resolved; other domains keep [delivery].
TEST_F(MxRouting, ProviderRulesApplyToDomainsByTheirMxHosts) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  ASSERT_TRUE(dns_.start(
      {"--mx-host=corp.test,mx1.bigmail.test,10", "--host-record=mx1.bigmail.test,127.0.0.2",
       "--mx-host=plain.test,mx.plain.test,10", "--host-record=mx.plain.test,127.0.0.2"}))
      << dns_.error();
  TempDir dir;
  std::ofstream(dir.file("rules.toml")) << R"(
[provider."bigmail"]
match = [{MXSuffix = ".bigmail.test"}]
connection_limit = 2
max_recipients_per_batch = 5
)";
  MxConfig cfg;
  cfg.delivery = "max_conns_per_destination = 12\n";
  cfg.dns += "[provider_shaping]\nfiles = [\"" + dir.file("rules.toml") + "\"]\n";
  ASSERT_TRUE(start_engine(cfg));
  std::vector<std::string> corp, plain;
  for (int i = 0; i < 20; ++i) {
    corp.push_back("c" + std::to_string(i) + "@corp.test");
    plain.push_back("p" + std::to_string(i) + "@plain.test");
  }
  ASSERT_EQ(submit(*engine_.engine, corp).accepted, 20u);
  ASSERT_EQ(submit(*engine_.engine, plain).accepted, 20u);
  ASSERT_TRUE(engine_.events.wait_finals(40, kWait));
  auto limit = [&](const std::string& domain) {
    std::string list = engine_.engine->control("list " + domain);
    std::smatch m;
    return std::regex_search(list, m, std::regex("\"max_connections\":(\\d+)")) ? std::stol(m[1])
                                                                                : -1L;
  };
  EXPECT_EQ(limit("corp.test"), 2);
  EXPECT_EQ(limit("plain.test"), 12);
  // Five recipients per transaction for the provider's domain.
  EXPECT_TRUE(sinks_[0].wait_stat("recipients", 40)) << sinks_[0].stats();
  EXPECT_GE(engine_.engine->stats().transactions, 4u + 1u);
}

TEST_F(MxRouting, ImplicitMxWhenTheDomainHasOnlyAnAddress) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  ASSERT_TRUE(dns_.start({"--host-record=implicit.test,127.0.0.2"})) << dns_.error();
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@implicit.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@implicit.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  EXPECT_EQ(ev.mx, "implicit.test");
  EXPECT_EQ(ev.peer, peer("127.0.0.2", sinks_.port()));
  EXPECT_EQ(dns_.queries("MX", "implicit.test"), 1u) << dns_.log();
  EXPECT_EQ(dns_.queries("A", "implicit.test"), 1u) << dns_.log();
}

TEST_F(MxRouting, NullMxBouncesWithoutConnecting) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // RFC 7505: one MX of preference 0 and exchange "." (rdata 0000 00).
  ASSERT_TRUE(dns_.start({"--dns-rr=nullmx.test,15,000000"})) << dns_.error();
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@nullmx.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@nullmx.test");
  EXPECT_EQ(ev.type, EventType::kBounced);
  EXPECT_EQ(ev.code, 556);
  EXPECT_EQ(ev.enhanced, "5.1.10");
  EXPECT_TRUE(contains(ev.response, "null MX")) << ev.response;
  EXPECT_EQ(ev.peer, "");
  EXPECT_EQ(engine_.engine->stats().connections_opened, 0u);
}

TEST_F(MxRouting, NxDomainBounces) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  ASSERT_TRUE(dns_.start({"--host-record=other.test,127.0.0.2"})) << dns_.error();
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@nx.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@nx.test");
  EXPECT_EQ(ev.type, EventType::kBounced);
  EXPECT_EQ(ev.code, 550);
  EXPECT_EQ(ev.enhanced, "5.1.2");
  EXPECT_TRUE(contains(ev.response, "NXDOMAIN")) << ev.response;
  EXPECT_EQ(engine_.engine->stats().connections_opened, 0u);
  EXPECT_EQ(dns_.queries("MX", "nx.test"), 1u) << dns_.log();
}

TEST_F(MxRouting, DomainLevelBouncesDoNotSuppressTheAddress) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // A null MX, a domain with no MX and no address record, and NXDOMAIN:
  // failures of the domain, not of the mailbox.
  ASSERT_TRUE(dns_.start({"--dns-rr=nullmx.test,15,000000", "--txt-record=noaddr.test,v=none",
                          "--host-record=other.test,127.0.0.2"}))
      << dns_.error();
  ASSERT_TRUE(start_engine());
  const std::vector<std::string> rcpts = {"r@nullmx.test", "r@noaddr.test", "r@nx.test"};
  for (const auto& r : rcpts) {
    submit_one(*engine_.engine, r);
  }
  ASSERT_TRUE(engine_.events.wait_finals(rcpts.size(), kWait));
  for (const auto& r : rcpts) {
    auto ev = only_event(engine_.events, r);
    EXPECT_EQ(ev.type, EventType::kBounced) << r << ": " << ev.json;
    EXPECT_TRUE(contains(ev.json, "\"class\":\"invalid_domain\"")) << ev.json;
    // The suppression subscriber sees each event before the test's
    // collector does, so the list is settled here.
    std::string check = engine_.engine->control("suppression check " + r);
    EXPECT_TRUE(contains(check, "\"suppressed\":false")) << check;
  }
  // The next batch to the same addresses is accepted (and bounces again).
  for (const auto& r : rcpts) {
    Ack ack = submit(*engine_.engine, {r});
    EXPECT_EQ(ack.accepted, 1u) << r;
    EXPECT_TRUE(ack.rejections.empty()) << r << ": " << ack.rejections[0].text;
  }
  ASSERT_TRUE(engine_.events.wait_finals(2 * rcpts.size(), kWait));
}

TEST_F(MxRouting, UnreachableResolverDefersThenDeliversOnceItAnswers) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // Nothing listens on the resolver port yet: the query is refused (ICMP).
  const uint16_t dns_port = free_port(SOCK_DGRAM);
  MxConfig cfg;
  cfg.dns_server = "127.0.0.1:" + std::to_string(dns_port);
  cfg.dns = "timeout = \"500ms\"\nerror_ttl = \"30s\"\n";
  ASSERT_TRUE(start_engine(cfg, &clock_));
  submit_one(*engine_.engine, "r@late.test");
  ASSERT_TRUE(engine_.events.wait_deferred(1, kWait));
  auto first = engine_.events.events("r@late.test");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].type, EventType::kDeferred);
  EXPECT_EQ(first[0].code, 451);
  EXPECT_EQ(first[0].enhanced, "4.4.3");
  EXPECT_TRUE(contains(first[0].response, "MX lookup for late.test failed")) << first[0].response;
  EXPECT_EQ(first[0].attempt, 1u);

  ASSERT_TRUE(dns_.start(
      {"--mx-host=late.test,mx.late.test,10", "--host-record=mx.late.test,127.0.0.2"}, dns_port))
      << dns_.error();
  // Past the retry (1m) and dns.error_ttl (30s): a fresh lookup succeeds.
  ASSERT_TRUE(advance_until(clock_, *engine_.engine, seconds(61), [&] {
    return engine_.events.finals() == 1;
  })) << dns_.log();
  auto all = engine_.events.events("r@late.test");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].type, EventType::kDelivered) << all[1].response;
  EXPECT_EQ(all[1].attempt, 2u);
  EXPECT_EQ(all[1].mx, "mx.late.test");
  EXPECT_EQ(dns_.queries("MX", "late.test"), 1u) << dns_.log();
}

TEST_F(MxRouting, ServfailDefersThenDeliversOnceTheZoneIsFixed) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // dnsmasq forwards sf.test to an upstream that answers SERVFAIL.
  wire::FakeDns upstream;
  ASSERT_TRUE(upstream.ok());
  upstream.set("sf.test", wire::kMx, wire::Canned::error(2));
  ASSERT_TRUE(dns_.start({"--server=/sf.test/127.0.0.1#" + std::to_string(upstream.port()),
                          "--host-record=mx.ok.test,127.0.0.2"}))
      << dns_.error();
  ASSERT_TRUE(start_engine({}, &clock_));
  submit_one(*engine_.engine, "r@sf.test");
  ASSERT_TRUE(engine_.events.wait_deferred(1, kWait));
  auto first = engine_.events.events("r@sf.test");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].type, EventType::kDeferred);
  EXPECT_EQ(first[0].code, 451);
  EXPECT_EQ(first[0].enhanced, "4.4.3");
  EXPECT_TRUE(contains(first[0].response, "MX lookup for sf.test failed")) << first[0].response;

  upstream.set("sf.test", wire::kMx,
               wire::Canned::answer(1, wire::rr(wire::kQname, wire::kMx, 60,
                                                wire::mx(10, wire::name("mx.ok.test")))));
  ASSERT_TRUE(advance_until(clock_, *engine_.engine, seconds(61), [&] {
    return engine_.events.finals() == 1;
  })) << dns_.log();
  auto all = engine_.events.events("r@sf.test");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].type, EventType::kDelivered) << all[1].response;
  EXPECT_EQ(all[1].attempt, 2u);
  EXPECT_EQ(all[1].mx, "mx.ok.test");
}

TEST_F(MxRouting, ExpiredTtlCausesAFreshLookup) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  ASSERT_TRUE(dns_.start({"--local-ttl=60", "--mx-host=ttl.test,mx.ttl.test,10",
                          "--host-record=mx.ttl.test,127.0.0.2"}))
      << dns_.error();
  MxConfig cfg;
  cfg.dns = "ttl_floor = \"1s\"\ntimeout = \"1s\"\n";
  cfg.delivery = kOneMessagePerConnection;
  ASSERT_TRUE(start_engine(cfg, &clock_));
  auto deliver = [&](const std::string& rcpt, size_t finals) {
    submit_one(*engine_.engine, rcpt);
    ASSERT_TRUE(engine_.events.wait_finals(finals, kWait)) << rcpt;
    EXPECT_EQ(only_event(engine_.events, rcpt).type, EventType::kDelivered) << rcpt;
  };
  deliver("r1@ttl.test", 1);
  EXPECT_EQ(dns_.queries("MX", "ttl.test"), 1u);
  // Within the 60 s TTL: the cached answer.
  clock_.advance(seconds(30));
  engine::wake_for_test(*engine_.engine);
  deliver("r2@ttl.test", 2);
  EXPECT_EQ(dns_.queries("MX", "ttl.test"), 1u) << dns_.log();
  // Past it: asked again.
  clock_.advance(seconds(31));
  engine::wake_for_test(*engine_.engine);
  deliver("r3@ttl.test", 3);
  // The route is refreshed in the background (the expired one still serves
  // meanwhile), so the host's A query may come after the delivery. At least
  // two: see RefreshAnswersAreNotLostToClosingConnections for resends.
  EXPECT_TRUE(eventually([&] { return dns_.queries("MX", "ttl.test") >= 2; }, kWait)) << dns_.log();
  EXPECT_TRUE(eventually([&] { return dns_.queries("A", "mx.ttl.test") >= 2; }, kWait))
      << dns_.log();
}

struct PreferCase {
  const char* prefer;
  const char* peer_ip;
  const char* unasked;  // record type that must not be queried, or ""
};

class MxAddressFamily : public MxRouting, public ::testing::WithParamInterface<PreferCase> {};

TEST_P(MxAddressFamily, PicksTheAddressFamily) {
  const PreferCase& pc = GetParam();
  ASSERT_TRUE(sinks_.start({"127.0.0.2", "[::1]"})) << sinks_.error();
  ASSERT_TRUE(
      dns_.start({"--mx-host=v6.test,mx.v6.test,10", "--host-record=mx.v6.test,127.0.0.2,::1"}))
      << dns_.error();
  MxConfig cfg;
  cfg.dns = std::string("prefer = \"") + pc.prefer + "\"\n";
  ASSERT_TRUE(start_engine(cfg));
  submit_one(*engine_.engine, "r@v6.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@v6.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  EXPECT_EQ(ev.mx, "mx.v6.test");
  EXPECT_EQ(ev.peer, peer(pc.peer_ip, sinks_.port()));
  if (std::string(pc.unasked).size() > 0) {
    EXPECT_EQ(dns_.queries(pc.unasked, "mx.v6.test"), 0u) << dns_.log();
  }
}

INSTANTIATE_TEST_SUITE_P(Dns, MxAddressFamily,
                         ::testing::Values(PreferCase{"ipv6", "[::1]", ""},
                                           PreferCase{"ipv4", "127.0.0.2", ""},
                                           PreferCase{"ipv4_only", "127.0.0.2", "AAAA"},
                                           PreferCase{"ipv6_only", "[::1]", "A"}),
                         [](const auto& p) { return std::string(p.param.prefer); });

// ---------------------------------------------------------------------------
// Scripted answers, served by FakeDns.

/// A well-formed MX answer pointing at `exchange`, and its A record.
void zone(wire::FakeDns& dns, const std::string& domain, const std::string& exchange,
          const char* ip, uint32_t ttl = 300) {
  dns.set(domain, wire::kMx,
          wire::Canned::answer(
              1, wire::rr(wire::kQname, wire::kMx, ttl, wire::mx(10, wire::name(exchange)))));
  dns.set(exchange, wire::kA,
          wire::Canned::answer(1, wire::rr(wire::kQname, wire::kA, ttl, wire::ipv4(ip))));
}

/// A compression pointer to `offset`.
std::string ptr(size_t offset) {
  return wire::u16(static_cast<uint16_t>(0xC000 | offset));
}

/// Offset of the first answer record in a response to `qname`.
size_t first_record_offset(const std::string& qname) {
  return 12 + wire::name(qname).size() + 4;
}

class HostileDns : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fake_.ok()); }
  ::testing::AssertionResult start_engine(MxConfig cfg = {}, const engine::Clock* clock = nullptr) {
    cfg.dns_server = fake_.server();
    cfg.smtp_port = sinks_.port();
    return started(engine_.start(cfg.toml(), clock));
  }

  wire::FakeDns fake_;
  Sinks sinks_;
  engine::ManualClock clock_;  // for tests that pass it; outlives engine_
  TestEngine engine_;
};

struct BadAnswer {
  std::string domain;
  wire::Canned mx;  // the MX answer for `domain`
  std::string why;  // expected in the deferral's text
};

std::vector<BadAnswer> bad_answers() {
  using wire::Canned;
  using wire::kQname;
  using wire::rr;
  std::vector<BadAnswer> v;
  // The header says one answer; the bytes end inside its header.
  v.push_back(
      {"trunc.test",
       Canned::answer(1, kQname + wire::u16(wire::kMx) + wire::u16(1) + std::string(2, '\0')),
       "DNS answer truncated inside a record header"});
  // rdlength says 20 bytes; 5 follow.
  v.push_back({"truncdata.test",
               Canned::answer(1, rr(kQname, wire::kMx, 300, wire::mx(10, "\x02mx"), 20)),
               "DNS answer truncated inside record data"});
  // The exchange is a compression pointer to itself.
  {
    size_t at = first_record_offset("ptrloop.test") + 2 + 10 + 2;
    v.push_back({"ptrloop.test",
                 Canned::answer(1, rr(kQname, wire::kMx, 300, wire::mx(10, ptr(at)))),
                 "compression pointer loop"});
  }
  // The owner of the first answer points forward, into its own record data.
  {
    size_t at = first_record_offset("fwdptr.test");
    v.push_back({"fwdptr.test",
                 Canned::answer(1, rr(ptr(at + 12), wire::kMx, 300, wire::mx(10, ptr(at)))),
                 "compression pointer loop"});
  }
  // a CNAME b, b CNAME a.
  v.push_back({"cnameloop.test",
               Canned::answer(2, rr(kQname, wire::kCname, 300, wire::name("b.cnameloop.test")) +
                                     rr(wire::name("b.cnameloop.test"), wire::kCname, 300,
                                        wire::name("cnameloop.test"))),
               "CNAME loop"});
  // Nine CNAME hops (the limit is 8).
  {
    std::string recs = rr(kQname, wire::kCname, 300, wire::name("c1.chain.test"));
    for (int i = 1; i < 9; ++i) {
      recs += rr(wire::name("c" + std::to_string(i) + ".chain.test"), wire::kCname, 300,
                 wire::name("c" + std::to_string(i + 1) + ".chain.test"));
    }
    v.push_back({"chain.test", Canned::answer(9, recs), "CNAME chain longer than 8"});
  }
  v.push_back({"shortmx.test", Canned::answer(1, rr(kQname, wire::kMx, 300, std::string(1, '\0'))),
               "short MX record"});
  v.push_back({"label.test", Canned::answer(1, rr(kQname, wire::kMx, 300, wire::mx(10, "\x42mx"))),
               "unknown label type"});
  {
    std::string longname;
    for (int i = 0; i < 5; ++i) {
      longname += std::string(63, 'a') + ".";
    }
    v.push_back({"longname.test",
                 Canned::answer(1, rr(kQname, wire::kMx, 300, wire::mx(10, wire::name(longname)))),
                 "longer than 255 octets"});
  }
  {
    Canned c = Canned::answer(1, rr(kQname, wire::kMx, 300, wire::mx(10, wire::name("mx.q.test"))));
    c.qr = false;
    v.push_back({"query.test", c, "not a response"});
  }
  // The rcode is not named here: see ServfailAndRefusedAreNamedInTheReason.
  v.push_back({"servfail.test", Canned::error(2), ""});
  v.push_back({"refused.test", Canned::error(5), ""});
  return v;
}

TEST_F(HostileDns, MalformedAnswersDeferWithTheReason) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  auto cases = bad_answers();
  for (const auto& c : cases) {
    fake_.set(c.domain, wire::kMx, c.mx);
  }
  // A good MX answer whose host's A answer is damaged.
  fake_.set("atrunc.test", wire::kMx,
            wire::Canned::answer(1, wire::rr(wire::kQname, wire::kMx, 300,
                                             wire::mx(10, wire::name("mx.atrunc.test")))));
  fake_.set("mx.atrunc.test", wire::kA,
            wire::Canned::answer(1, wire::kQname + wire::u16(wire::kA)));
  zone(fake_, "good.test", "mx.good.test", "127.0.0.2");
  ASSERT_TRUE(start_engine());
  for (const auto& c : cases) {
    submit_one(*engine_.engine, "r@" + c.domain);
  }
  submit_one(*engine_.engine, "r@atrunc.test");
  submit_one(*engine_.engine, "r@good.test");

  ASSERT_TRUE(engine_.events.wait_deferred(cases.size() + 1, kWait));
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  for (const auto& c : cases) {
    SCOPED_TRACE(c.domain);
    auto ev = only_event(engine_.events, "r@" + c.domain);
    EXPECT_EQ(ev.type, EventType::kDeferred);
    EXPECT_EQ(ev.code, 451);
    EXPECT_EQ(ev.enhanced, "4.4.3");
    EXPECT_TRUE(contains(ev.response, "MX lookup for " + c.domain + " failed")) << ev.response;
    EXPECT_TRUE(contains(ev.response, c.why)) << ev.response;
  }
  auto ev = only_event(engine_.events, "r@atrunc.test");
  EXPECT_EQ(ev.type, EventType::kDeferred);
  EXPECT_EQ(ev.enhanced, "4.4.3");
  EXPECT_TRUE(contains(ev.response, "address lookup failed")) << ev.response;
  // The shard survived all of it.
  auto good = only_event(engine_.events, "r@good.test");
  EXPECT_EQ(good.type, EventType::kDelivered) << good.response;
  EXPECT_EQ(engine_.engine->stats().connections_opened, 1u);
}

// c-ares 1.18.1: after dns.tries answers of SERVFAIL (or REFUSED) it ends
// the query with ARES_ECONNREFUSED, the same status as a refused
// connection; the reason must still name what the server answered.
TEST_F(HostileDns, ServfailAndRefusedAreNamedInTheReason) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  fake_.set("sf.test", wire::kMx, wire::Canned::error(2));
  fake_.set("rf.test", wire::kMx, wire::Canned::error(5));
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@sf.test");
  submit_one(*engine_.engine, "r@rf.test");
  ASSERT_TRUE(engine_.events.wait_deferred(2, kWait));
  auto sf = only_event(engine_.events, "r@sf.test");
  auto rf = only_event(engine_.events, "r@rf.test");
  EXPECT_EQ(sf.enhanced, "4.4.3");
  EXPECT_EQ(rf.enhanced, "4.4.3");
  // The server answered every query: nothing refused a connection.
  EXPECT_GE(fake_.count("sf.test", wire::kMx), 1u);
  EXPECT_GE(fake_.count("rf.test", wire::kMx), 1u);
  EXPECT_TRUE(contains(sf.response, "SERVFAIL")) << sf.response;
  EXPECT_TRUE(contains(rf.response, "REFUSED")) << rf.response;
  EXPECT_FALSE(contains(sf.response, "refused the connection")) << sf.response;
}

TEST_F(HostileDns, AbsurdTtlsAreClampedToTheConfiguredRange) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // TTL 0; 2^31 + 5 (high bit set: read as 0, RFC 2181 8); 2^31 - 1.
  zone(fake_, "ttl0.test", "mx.ttl0.test", "127.0.0.2", 0);
  zone(fake_, "ttlhigh.test", "mx.ttlhigh.test", "127.0.0.2", 0x80000005u);
  zone(fake_, "ttlmax.test", "mx.ttlmax.test", "127.0.0.2", 0x7FFFFFFFu);
  MxConfig cfg;
  cfg.dns = "ttl_floor = \"10s\"\nttl_ceiling = \"1h\"\n";
  cfg.delivery = kOneMessagePerConnection;
  ASSERT_TRUE(start_engine(cfg, &clock_));
  size_t finals = 0;
  int round = 0;
  auto deliver_all = [&] {
    ++round;
    for (const char* d : {"ttl0.test", "ttlhigh.test", "ttlmax.test"}) {
      submit_one(*engine_.engine, "r" + std::to_string(round) + "@" + d);
    }
    finals += 3;
    ASSERT_TRUE(engine_.events.wait_finals(finals, kWait)) << "round " << round;
    for (const char* d : {"ttl0.test", "ttlhigh.test", "ttlmax.test"}) {
      auto ev = only_event(engine_.events, "r" + std::to_string(round) + "@" + d);
      EXPECT_EQ(ev.type, EventType::kDelivered) << d << ": " << ev.response;
    }
  };
  auto advance = [&](seconds s) {
    clock_.advance(s);
    engine::wake_for_test(*engine_.engine);
  };
  deliver_all();
  EXPECT_EQ(fake_.count("ttl0.test", wire::kMx), 1u);
  EXPECT_EQ(fake_.count("ttlhigh.test", wire::kMx), 1u);
  EXPECT_EQ(fake_.count("ttlmax.test", wire::kMx), 1u);
  // 5 s later: TTL 0 was raised to the 10 s floor, so still cached.
  advance(seconds(5));
  deliver_all();
  EXPECT_EQ(fake_.count("ttl0.test", wire::kMx), 1u);
  EXPECT_EQ(fake_.count("ttlhigh.test", wire::kMx), 1u);
  // 11 s: past the floor; 2^31 + 5 behaved as 0, not as 68 years.
  advance(seconds(6));
  deliver_all();
  auto queried = [&](const char* d, size_t n) {
    return eventually([&] { return fake_.count(d, wire::kMx) == n; }, kWait);
  };
  EXPECT_TRUE(queried("ttl0.test", 2));
  EXPECT_TRUE(queried("ttlhigh.test", 2));
  EXPECT_EQ(fake_.count("ttlmax.test", wire::kMx), 1u);
  // Past the 1 h ceiling: 2^31 - 1 seconds was cut to it.
  advance(seconds(3600));
  deliver_all();
  EXPECT_TRUE(queried("ttlmax.test", 2));
}

TEST_F(HostileDns, IpLiteralExchangeIsSkipped) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2", "127.0.0.3"})) << sinks_.error();
  // The literal names an address where a sink listens, so using it by
  // mistake would show as a delivery (and no traffic leaves loopback).
  fake_.set("literal.test", wire::kMx,
            wire::Canned::answer(
                1, wire::rr(wire::kQname, wire::kMx, 300, wire::mx(10, wire::name("127.0.0.2")))));
  fake_.set("literal2.test", wire::kMx,
            wire::Canned::answer(
                2, wire::rr(wire::kQname, wire::kMx, 300, wire::mx(10, wire::name("127.0.0.2"))) +
                       wire::rr(wire::kQname, wire::kMx, 300,
                                wire::mx(20, wire::name("mx.literal2.test")))));
  fake_.set(
      "mx.literal2.test", wire::kA,
      wire::Canned::answer(1, wire::rr(wire::kQname, wire::kA, 300, wire::ipv4("127.0.0.3"))));
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@literal.test");
  submit_one(*engine_.engine, "r@literal2.test");
  ASSERT_TRUE(engine_.events.wait_finals(2, kWait));
  // With nothing else, resolver.cc bounces: the MX set names no usable host.
  auto lit = only_event(engine_.events, "r@literal.test");
  EXPECT_EQ(lit.type, EventType::kBounced);
  EXPECT_EQ(lit.code, 550);
  EXPECT_EQ(lit.enhanced, "5.4.4");
  EXPECT_TRUE(contains(lit.response, "no address for the mail servers of literal.test"))
      << lit.response;
  EXPECT_EQ(lit.peer, "");
  auto lit2 = only_event(engine_.events, "r@literal2.test");
  EXPECT_EQ(lit2.type, EventType::kDelivered) << lit2.response;
  EXPECT_EQ(lit2.mx, "mx.literal2.test");
  EXPECT_EQ(lit2.peer, peer("127.0.0.3", sinks_.port()));
  EXPECT_EQ(fake_.count("127.0.0.2"), 0u) << "the literal was looked up as a name";
  EXPECT_EQ(sinks_.connections(0), 0.0);
}

TEST_F(HostileDns, RootExchangeBesideARealMxIsIgnored) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  fake_.set(
      "rootmx.test", wire::kMx,
      wire::Canned::answer(2, wire::rr(wire::kQname, wire::kMx, 300, wire::mx(0, wire::name("."))) +
                                  wire::rr(wire::kQname, wire::kMx, 300,
                                           wire::mx(10, wire::name("mx.rootmx.test")))));
  fake_.set(
      "mx.rootmx.test", wire::kA,
      wire::Canned::answer(1, wire::rr(wire::kQname, wire::kA, 300, wire::ipv4("127.0.0.2"))));
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@rootmx.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@rootmx.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  EXPECT_EQ(ev.mx, "mx.rootmx.test");
  EXPECT_EQ(ev.peer, peer("127.0.0.2", sinks_.port()));
}

TEST_F(HostileDns, HundredsOfMxRecordsOverTcpUseOnlyMaxMx) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // 300 MX records, in descending preference; only mx000 (the lowest)
  // has a listener behind it. Too large for UDP: TC there, full over TCP.
  constexpr int kRecords = 300;
  auto host = [](int i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "mx%03d.big.test", i);
    return std::string(buf);
  };
  std::string recs;
  for (int i = kRecords - 1; i >= 0; --i) {
    recs += wire::rr(wire::kQname, wire::kMx, 300,
                     wire::mx(static_cast<uint16_t>(i + 1), wire::name(host(i))));
    fake_.set(host(i), wire::kA,
              wire::Canned::answer(1, wire::rr(wire::kQname, wire::kA, 300,
                                               wire::ipv4(i == 0 ? "127.0.0.2" : "127.0.0.3"))));
  }
  ASSERT_GT(recs.size(), 4096u);  // far beyond the 1232-byte EDNS size ringmail offers
  wire::Canned big = wire::Canned::answer(kRecords, recs);
  big.tc_over_udp = true;
  fake_.set("big.test", wire::kMx, big);
  MxConfig cfg;
  cfg.dns = "max_mx = 3\nprefer = \"ipv4_only\"\n";
  ASSERT_TRUE(start_engine(cfg));
  submit_one(*engine_.engine, "r@big.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  auto ev = only_event(engine_.events, "r@big.test");
  EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  EXPECT_EQ(ev.mx, "mx000.big.test");
  EXPECT_EQ(fake_.count("big.test", wire::kMx, /*tcp_only=*/true), 1u);
  std::set<std::string> asked;
  for (const auto& s : fake_.seen()) {
    if (s.qtype == wire::kA) {
      asked.insert(s.qname);
    }
  }
  EXPECT_EQ(asked, (std::set<std::string>{host(0), host(1), host(2)}));
}

TEST_F(HostileDns, SilentServerTimesOutWithoutBlockingTheShard) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  wire::Canned silent;
  silent.silent = true;
  fake_.set("silent.test", wire::kMx, silent);
  MxConfig cfg;
  cfg.shards = 1;  // the static domain shares the shard that waits on DNS
  cfg.dns = "timeout = \"1s\"\ntries = 2\n";
  cfg.domains = "\"static.test\" = \"127.0.0.2:" + std::to_string(sinks_.port()) + "\"\n";
  ASSERT_TRUE(start_engine(cfg));
  auto t0 = Clock::now();
  submit_one(*engine_.engine, "r@silent.test");
  ASSERT_TRUE(eventually([&] { return fake_.count("silent.test", wire::kMx) >= 1; }, kWait));
  submit_one(*engine_.engine, "r@static.test");
  ASSERT_TRUE(engine_.events.wait_finals(1, kWait));
  EXPECT_EQ(only_event(engine_.events, "r@static.test").type, EventType::kDelivered);
  EXPECT_TRUE(engine_.events.events("r@silent.test").empty())
      << "the DNS timeout came before a delivery on the same shard";

  ASSERT_TRUE(engine_.events.wait_deferred(1, kWait));
  auto elapsed = Clock::now() - t0;
  auto ev = only_event(engine_.events, "r@silent.test");
  EXPECT_EQ(ev.type, EventType::kDeferred);
  EXPECT_EQ(ev.code, 451);
  EXPECT_EQ(ev.enhanced, "4.4.3");
  EXPECT_TRUE(contains(ev.response, "timeout")) << ev.response;
  EXPECT_GE(elapsed, milliseconds(2'000));               // at least timeout * tries
  EXPECT_EQ(fake_.count("silent.test", wire::kMx), 2u);  // dns.tries
}

TEST_F(HostileDns, ConcurrentLookupsOfANewDomainShareOneQuery) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  zone(fake_, "dedup.test", "mx.dedup.test", "127.0.0.2");
  wire::Canned held = wire::Canned::answer(
      1, wire::rr(wire::kQname, wire::kMx, 300, wire::mx(10, wire::name("mx.dedup.test"))));
  held.hold = true;
  fake_.set("dedup.test", wire::kMx, held);
  MxConfig cfg;
  cfg.shards = 2;
  cfg.dns = "timeout = \"10s\"\n";  // no c-ares resend while the answer is held
  ASSERT_TRUE(start_engine(cfg));
  constexpr size_t kRcpts = 10'000, kBatch = 100;
  auto batch = [](size_t first) {
    std::vector<std::string> r;
    for (size_t i = first; i < first + kBatch; ++i) {
      r.push_back("u" + std::to_string(i) + "@dedup.test");
    }
    return r;
  };
  ASSERT_EQ(submit(*engine_.engine, batch(0)).accepted, kBatch);
  ASSERT_TRUE(eventually([&] { return fake_.count("dedup.test", wire::kMx) == 1; }, kWait));
  for (size_t first = kBatch; first < kRcpts; first += kBatch) {
    ASSERT_EQ(submit(*engine_.engine, batch(first)).accepted, kBatch);
  }
  EXPECT_TRUE(engine_.events.all().empty()) << "an outcome before the MX answer";
  EXPECT_EQ(fake_.count("dedup.test", wire::kMx), 1u);
  fake_.release();
  ASSERT_TRUE(engine_.events.wait_finals(kRcpts, milliseconds(60'000)));
  auto all = engine_.events.all();
  size_t delivered = 0;
  for (const auto& [rcpt, evs] : all) {
    delivered += evs.size() == 1 && evs[0].type == EventType::kDelivered ? 1 : 0;
  }
  EXPECT_EQ(delivered, kRcpts);
  EXPECT_EQ(fake_.count("dedup.test", wire::kMx), 1u) << "MX queries after the answer";
  EXPECT_EQ(fake_.count("mx.dedup.test", wire::kA), 1u) << "A queries";
  EXPECT_TRUE(sinks_[0].wait_stat("recipients", kRcpts)) << sinks_[0].stats();
}

TEST_F(HostileDns, ConcurrentLookupsOfOneMxHostShareOneQuery) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // 50 domains, one MX host: the host's A lookups meet in the DNS cache
  // (not in a destination) while its answer is held.
  constexpr int kDomains = 50;
  for (int i = 0; i < kDomains; ++i) {
    zone(fake_, "s" + std::to_string(i) + ".share.test", "mx.share.test", "127.0.0.2");
  }
  wire::Canned held =
      wire::Canned::answer(1, wire::rr(wire::kQname, wire::kA, 300, wire::ipv4("127.0.0.2")));
  held.hold = true;
  fake_.set("mx.share.test", wire::kA, held);
  MxConfig cfg;
  cfg.shards = 1;  // one cache
  cfg.dns = "timeout = \"10s\"\nprefer = \"ipv4_only\"\n";
  ASSERT_TRUE(start_engine(cfg));
  for (int i = 0; i < kDomains; ++i) {
    submit_one(*engine_.engine, "r@s" + std::to_string(i) + ".share.test");
  }
  ASSERT_TRUE(eventually(
      [&] {
        size_t mx = 0;
        for (int i = 0; i < kDomains; ++i) {
          mx += fake_.count("s" + std::to_string(i) + ".share.test", wire::kMx);
        }
        return mx == kDomains;
      },
      kWait));
  // The first MX answer leads to the host's A query; the other 49 wait for it.
  ASSERT_TRUE(eventually([&] { return fake_.count("mx.share.test", wire::kA) >= 1; }, kWait));
  EXPECT_EQ(fake_.count("mx.share.test", wire::kA), 1u);
  fake_.release();
  ASSERT_TRUE(engine_.events.wait_finals(kDomains, kWait));
  for (int i = 0; i < kDomains; ++i) {
    auto ev = only_event(engine_.events, "r@s" + std::to_string(i) + ".share.test");
    EXPECT_EQ(ev.type, EventType::kDelivered) << ev.response;
  }
  EXPECT_EQ(fake_.count("mx.share.test", wire::kA), 1u);
}

TEST_F(HostileDns, CnameLoopAcrossSeparateAnswers) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  // A broken resolver that answers each name with only its CNAME: the MX
  // answer for x.test is "x.test CNAME y.test", the A answer for y.test is
  // "y.test CNAME x.test". No single answer holds the loop.
  auto cname = [](const char* target) {
    return wire::Canned::answer(1, wire::rr(wire::kQname, wire::kCname, 300, wire::name(target)));
  };
  for (uint16_t t : {wire::kMx, wire::kA, wire::kAaaa}) {
    fake_.set("x.test", t, cname("y.test"));
    fake_.set("y.test", t, cname("x.test"));
  }
  ASSERT_TRUE(start_engine());
  submit_one(*engine_.engine, "r@x.test");
  ASSERT_TRUE(eventually([&] { return !engine_.events.events("r@x.test").empty(); }, kWait));
  auto ev = only_event(engine_.events, "r@x.test");
  // An alias whose target came without records and without an SOA is a
  // chain the resolver could not finish: deferred with the reason, never
  // a bounce as if the domain had no mail host.
  EXPECT_EQ(ev.type, EventType::kDeferred);
  EXPECT_EQ(ev.code, 451);
  EXPECT_EQ(ev.enhanced, "4.4.3");
  EXPECT_TRUE(contains(ev.response, "CNAME chain of x.test ends at y.test")) << ev.response;
  EXPECT_EQ(engine_.engine->stats().connections_opened, 0u);
}

// Used to fail intermittently per round (so almost surely over 200 rounds)
// when engine/smtp_connection.cc's close_socket() closed the
// descriptor while the recv it has just queued is still unsubmitted in the
// SQ ring. A refresh started in the same loop iteration gets a c-ares socket
// with the same number, the stale recv is then submitted against it and
// swallows the DNS answer, and the lookup waits for the c-ares timeout
// (seen as a second query for the same name).
TEST_F(HostileDns, RefreshAnswersAreNotLostToClosingConnections) {
  ASSERT_TRUE(sinks_.start({"127.0.0.2"})) << sinks_.error();
  zone(fake_, "churn.test", "mx.churn.test", "127.0.0.2", 60);
  MxConfig cfg;
  cfg.dns = "ttl_floor = \"1s\"\ntimeout = \"10s\"\nprefer = \"ipv4_only\"\n";
  cfg.delivery = kOneMessagePerConnection;
  ASSERT_TRUE(start_engine(cfg, &clock_));
  size_t finals = 0;
  auto deliver = [&](const std::string& rcpt) {
    submit_one(*engine_.engine, rcpt);
    ASSERT_TRUE(engine_.events.wait_finals(++finals, milliseconds(5'000)))
        << rcpt << " not delivered within 5 s";
  };
  ASSERT_NO_FATAL_FAILURE(deliver("first@churn.test"));
  constexpr int kRounds = 200;
  for (int i = 0; i < kRounds; ++i) {
    // A round from the cache: its connection takes the lowest free
    // descriptor (c-ares closes its socket when idle)...
    clock_.advance(seconds(1));
    ASSERT_NO_FATAL_FAILURE(deliver("cached" + std::to_string(i) + "@churn.test"));
    // ...and the next submission, past the TTL, re-resolves while that
    // connection is closing.
    clock_.advance(seconds(61));
    ASSERT_NO_FATAL_FAILURE(deliver("expired" + std::to_string(i) + "@churn.test"));
    // The refresh ends with the host's A query: a millisecond on loopback,
    // while a lost answer waits for the 10 s c-ares timeout.
    const auto want = static_cast<size_t>(i) + 2;
    ASSERT_TRUE(eventually([&] { return fake_.count("mx.churn.test", wire::kA) == want; },
                           milliseconds(2'000)))
        << "round " << i << ": the refresh did not complete; MX queries "
        << fake_.count("churn.test", wire::kMx) << ", A queries "
        << fake_.count("mx.churn.test", wire::kA);
    ASSERT_EQ(fake_.count("churn.test", wire::kMx), want) << "round " << i;
  }
  for (const auto& [rcpt, evs] : engine_.events.all()) {
    EXPECT_EQ(evs.size(), 1u) << rcpt;
    EXPECT_EQ(evs.front().type, EventType::kDelivered) << rcpt << ": " << evs.front().response;
  }
}

}  // namespace
}  // namespace ringmail::testing
