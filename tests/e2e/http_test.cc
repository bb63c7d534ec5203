// End to end: the HTTP listener (engine/http_server.h) of an embedded
// engine, driven by curl: the injection API (success, partial failure,
// personalisation, authentication, malformed and oversized requests, the
// limits) with delivery to ringmail-sink, and /metrics read by Prometheus's
// own text-format parser (Debian's python3-prometheus-client, run by
// /usr/bin/python3), whose values must match what was delivered.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "engine/spool.h"
#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

constexpr milliseconds kWait(20'000);
constexpr char kToken[] = "test-token-0123456789abcdef";

std::string curl_path() {
  return env_or("CURL", "/usr/bin/curl");
}
std::string python_path() {
  return env_or("PYTHON3", "/usr/bin/python3");
}

// Prints every sample the parser found as `name{k="v",...} value` (labels
// sorted), and `# TYPE family type` per family; exit 1 when it cannot parse.
constexpr char kParser[] = R"(import sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
for fam in text_string_to_metric_families(text):
    print("# TYPE %s %s" % (fam.name, fam.type))
    for s in fam.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
)";

struct HttpReply {
  int status = 0;
  std::string body;
  std::string headers;
};

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(have_program(curl_path())) << "curl missing (apt-get install curl)";
    ASSERT_TRUE(have_program(python_path()));
    ASSERT_EQ(::mkdir(dir_.file("dump").c_str(), 0700), 0);
    ASSERT_TRUE(sink_.start({"--dump-dir", dir_.file("dump")})) << sink_.error();
    ASSERT_TRUE(write(dir_.file("tokens"), std::string("# injectors\n\n") + kToken + "\n"));
    ASSERT_TRUE(write(dir_.file("parse.py"), kParser));
  }

  static bool write(const std::string& path, const std::string& text) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) {
      return false;
    }
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    return std::fclose(f) == 0 && ok;
  }
  /// Every message the sink stored, concatenated.
  std::string dumped() const {
    std::string all;
    for (const auto& e : std::filesystem::directory_iterator(dir_.file("dump"))) {
      all += read_file(e.path().string()).value_or("");
    }
    return all;
  }

  /// Starts the engine; `http` goes into [http], `more` is appended.
  void start(const std::string& http = "", const std::string& more = "") {
    port_ = free_port();
    std::string toml =
        "[delivery]\nehlo_name = \"client.test\"\ntls = \"none\"\n"
        "[routing]\ndefault = \"127.0.0.1:" +
        std::to_string(sink_.port()) +
        "\"\n"
        "[retry]\nschedule = [\"1h\"]\n"
        "[http]\nlisten = \"127.0.0.1:" +
        std::to_string(port_) + "\"\napi_tokens_file = \"" + dir_.file("tokens") + "\"\n" + http +
        "\n" + more;
    auto r = eng_.start(toml);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  /// Runs curl with `args` (plus -sS, the status and headers captured).
  HttpReply curl(std::vector<std::string> args) {
    std::string tag = "curl" + std::to_string(++runs_);
    std::string head = dir_.file(tag + ".head");
    std::vector<std::string> argv = {
        curl_path(), "-sS",         "--max-time", "15", "-D", head, "-o", dir_.file(tag + ".body"),
        "-w",        "%{http_code}"};
    argv.insert(argv.end(), args.begin(), args.end());
    Child c;
    EXPECT_TRUE(c.start(argv, dir_.path(), tag));
    int rc = c.wait(kWait);
    HttpReply r;
    EXPECT_EQ(rc, 0) << c.err();
    r.status = std::atoi(c.out().c_str());
    r.body = read_file(dir_.file(tag + ".body")).value_or("");
    r.headers = read_file(head).value_or("");
    return r;
  }

  /// POSTs `json` to the injection API with `token` (empty: no
  /// Authorization field).
  HttpReply inject(const std::string& json, const std::string& token = kToken) {
    std::string file = dir_.file("req" + std::to_string(++bodies_) + ".json");
    EXPECT_TRUE(write(file, json));
    std::vector<std::string> args = {"-H", "Content-Type: application/json", "--data-binary",
                                     "@" + file};
    if (!token.empty()) {
      args.push_back("-H");
      args.push_back("Authorization: Bearer " + token);
    }
    args.push_back(url("/api/inject/v1"));
    return curl(args);
  }

  /// Scrapes /metrics and parses it with prometheus_client: sample
  /// `name{labels}` -> value, and `# TYPE family` -> type (as value key).
  std::map<std::string, std::string> scrape() {
    HttpReply r = curl({url("/metrics")});
    EXPECT_EQ(r.status, 200);
    EXPECT_NE(r.headers.find("text/plain; version=0.0.4"), std::string::npos) << r.headers;
    std::string text = dir_.file("metrics" + std::to_string(runs_) + ".txt");
    EXPECT_TRUE(write(text, r.body));
    Child py;
    EXPECT_TRUE(
        py.start({"/bin/sh", "-c",
                  "'" + python_path() + "' '" + dir_.file("parse.py") + "' < '" + text + "'"},
                 dir_.path(), "parse" + std::to_string(runs_)));
    EXPECT_EQ(py.wait(kWait), 0) << py.err() << "\n" << r.body;
    std::map<std::string, std::string> out;
    std::istringstream in(py.out());
    std::string line;
    while (std::getline(in, line)) {
      size_t sp = line.rfind(' ');
      out[line.substr(0, sp)] = line.substr(sp + 1);
    }
    last_text_ = r.body;
    return out;
  }

  static double num(const std::map<std::string, std::string>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? -1 : std::strtod(it->second.c_str(), nullptr);
  }

  static std::string outcome(const std::string& kind, const std::string& domain) {
    return "ringmail_recipient_outcomes_total{domain=\"" + domain + "\",outcome=\"" + kind +
           "\",pool=\"default\"}";
  }

  TempDir dir_;
  SinkProcess sink_;
  EmbeddedEngine eng_;
  uint16_t port_ = 0;
  int runs_ = 0;
  int bodies_ = 0;
  std::string last_text_;
};

std::string batch_json(const std::vector<std::string>& rcpts, const std::string& extra = "") {
  std::string j =
      "{\"envelope_sender\":\"news@sender.test\",\"content\":\"From: <news@sender.test>\\r\\n"
      "Subject: hello\\r\\n\\r\\nHello there\\r\\n\",\"recipients\":[";
  for (size_t i = 0; i < rcpts.size(); ++i) {
    j += (i > 0 ? "," : "") + std::string("{\"email\":\"") + rcpts[i] + "\"}";
  }
  return j + "]" + extra + "}";
}

TEST_F(HttpTest, InjectDeliversAndReportsPartialFailure) {
  start();
  HttpReply ok = inject(batch_json({"ann@one.test", "bob@two.test"}));
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.body,
            "{\"success_count\":2,\"fail_count\":0,\"failed_recipients\":[],\"errors\":[]}");
  EXPECT_TRUE(sink_.wait_stat("recipients", 2, kWait)) << sink_.stats();

  // One invalid recipient: the rest of the request is still accepted.
  HttpReply partial = inject(batch_json({"cid@one.test", "not an address", "cid@one.test"}));
  EXPECT_EQ(partial.status, 200) << partial.body;
  EXPECT_NE(partial.body.find("\"success_count\":1,\"fail_count\":2"), std::string::npos)
      << partial.body;
  EXPECT_NE(partial.body.find("\"failed_recipients\":[\"not an address\",\"cid@one.test\"]"),
            std::string::npos)
      << partial.body;
  EXPECT_NE(partial.body.find("not an address: invalid_address"), std::string::npos);
  EXPECT_NE(partial.body.find("cid@one.test: duplicate"), std::string::npos);
  EXPECT_TRUE(sink_.wait_stat("recipients", 3, kWait)) << sink_.stats();

  // No valid recipient at all: the whole batch is refused.
  HttpReply none = inject(batch_json({"bad address"}));
  EXPECT_EQ(none.status, 422) << none.body;
  EXPECT_NE(none.body.find("\"success_count\":0,\"fail_count\":1"), std::string::npos);
  EXPECT_EQ(eng_.engine->stats().delivered, 3u);
}

TEST_F(HttpTest, SubstitutionsPersonalise) {
  start();
  std::string j =
      "{\"envelope_sender\":\"news@sender.test\",\"content\":\"From: <news@sender.test>\\r\\n"
      "Subject: hi {{name}}\\r\\n\\r\\nDear {{name}} of {{town}}\\r\\n\","
      "\"substitutions\":{\"town\":\"Gent\"},"
      "\"recipients\":[{\"email\":\"ann@one.test\",\"substitutions\":{\"name\":\"Ann \\u00e9\"}},"
      "{\"email\":\"bob@one.test\",\"name\":\"Bob\",\"substitutions\":{\"name\":\"Bob\","
      "\"town\":\"Lier\"}},{\"email\":\"cid@one.test\"}]}";
  HttpReply r = inject(j);
  EXPECT_EQ(r.status, 200) << r.body;
  // cid has no "name": refused by the template check, never sent blank.
  EXPECT_NE(r.body.find("\"success_count\":2,\"fail_count\":1"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("cid@one.test: template"), std::string::npos) << r.body;
  ASSERT_TRUE(sink_.wait_stat("messages", 2, kWait)) << sink_.stats();
  std::string all = dumped();
  EXPECT_NE(all.find("Dear Ann \xc3\xa9 of Gent"), std::string::npos) << all;
  EXPECT_NE(all.find("Dear Bob of Lier"), std::string::npos) << all;
  EXPECT_NE(all.find("Subject: hi Bob"), std::string::npos) << all;
}

TEST_F(HttpTest, RefusesBadRequests) {
  start("max_body_bytes = \"2KiB\"");
  HttpReply bad_token = inject(batch_json({"ann@one.test"}), "wrong-token-0123456789");
  EXPECT_EQ(bad_token.status, 401) << bad_token.body;
  EXPECT_NE(bad_token.headers.find("WWW-Authenticate: Bearer"), std::string::npos);
  EXPECT_NE(bad_token.body.find("invalid bearer token"), std::string::npos);
  HttpReply no_token = inject(batch_json({"ann@one.test"}), "");
  EXPECT_EQ(no_token.status, 401) << no_token.body;

  HttpReply malformed = inject("{\"envelope_sender\": \"a@b.test\", \"content\": ");
  EXPECT_EQ(malformed.status, 400) << malformed.body;
  EXPECT_NE(malformed.body.find("malformed JSON"), std::string::npos) << malformed.body;
  HttpReply unknown = inject(batch_json({"ann@one.test"}, ",\"campaign\":\"x\""));
  EXPECT_EQ(unknown.status, 400);
  EXPECT_NE(unknown.body.find("unknown field \\\"campaign\\\""), std::string::npos) << unknown.body;
  HttpReply no_rcpts = inject(
      "{\"envelope_sender\":\"a@b.test\",\"content\":\"Subject: x\\r\\n\\r\\nx\","
      "\"recipients\":[]}");
  EXPECT_EQ(no_rcpts.status, 400);

  std::string big(3000, 'x');
  HttpReply oversize = inject(batch_json({"ann@one.test"}, ",\"pad\":\"" + big + "\""));
  EXPECT_EQ(oversize.status, 413) << oversize.body;
  EXPECT_NE(oversize.body.find("over the limit of 2048 bytes"), std::string::npos) << oversize.body;

  HttpReply get = curl({url("/api/inject/v1")});
  EXPECT_EQ(get.status, 405);
  HttpReply missing = curl({url("/nothing")});
  EXPECT_EQ(missing.status, 404);
  HttpReply chunked =
      curl({"-H", "Transfer-Encoding: chunked", "--data-binary", "{}", url("/api/inject/v1")});
  EXPECT_EQ(chunked.status, 501) << chunked.body;
  HttpReply form = curl({"-H", "Authorization: Bearer " + std::string(kToken), "--data", "a=b",
                         url("/api/inject/v1")});
  EXPECT_EQ(form.status, 415) << form.body;
  // Nothing of the refused requests was taken; the server still answers.
  EXPECT_EQ(eng_.engine->stats().unfinished + eng_.engine->stats().delivered, 0u);
  EXPECT_EQ(inject(batch_json({"ann@one.test"})).status, 200);
  EXPECT_TRUE(sink_.wait_stat("recipients", 1, kWait));
}

TEST_F(HttpTest, InjectionOffWithoutTokens) {
  port_ = free_port();
  std::string toml = "[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink_.port()) +
                     "\"\n[http]\nlisten = \"127.0.0.1:" + std::to_string(port_) + "\"\n";
  auto r = eng_.start(toml);
  ASSERT_TRUE(r.ok()) << r.error().message;
  HttpReply off = inject(batch_json({"ann@one.test"}));
  EXPECT_EQ(off.status, 403) << off.body;
  EXPECT_NE(off.body.find("http.api_tokens_file"), std::string::npos);
  EXPECT_EQ(curl({url("/metrics")}).status, 200);
}

TEST_F(HttpTest, MemoryBudgetAnswers503WithRetryAfter) {
  // A 2 MiB budget cannot hold a body announced at 3 MiB: refused before
  // any of it is read.
  start("max_body_bytes = \"8MiB\"", "[limits]\nmax_queued_bytes = \"2MiB\"\n");
  std::string big(3u << 20, 'x');
  HttpReply r = inject(batch_json({"ann@one.test"}, ",\"pad\":\"" + big + "\""));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.headers.find("Retry-After: 5"), std::string::npos) << r.headers;
  EXPECT_NE(r.body.find("limits.max_queued_bytes"), std::string::npos);
}

TEST_F(HttpTest, SpoolUnavailableAnswers503) {
  start("", "[spool]\nmode = \"sync\"\ndir = \"" + dir_.file("spool") + "\"\n");
  engine::SpoolFaults& f = engine::spool_faults_for_test();
  f.write_errno = EIO;
  HttpReply r = inject(batch_json({"ann@one.test"}));
  f.write_errno = 0;
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.headers.find("Retry-After: 30"), std::string::npos) << r.headers;
  EXPECT_NE(r.body.find("\"success_count\":0,\"fail_count\":1"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("spool"), std::string::npos) << r.body;
  EXPECT_EQ(eng_.engine->stats().unfinished, 0u) << "nothing was taken";
  auto m = scrape();
  EXPECT_EQ(num(m, "ringmail_ingest_batches_total{source=\"http\",status=\"spool_unavailable\"}"),
            1);
  EXPECT_GE(num(m, "ringmail_spool_errors_total{}"), 1);
  // Accepted again once the spool's probe succeeds.
  EXPECT_TRUE(
      eventually([&] { return inject(batch_json({"bob@one.test"})).status == 200; }, kWait));
}

TEST_F(HttpTest, MetricsMatchDeliveries) {
  // One destination gets a label of its own; the rest is "other". The
  // spool is on, so batches are fsynced before they are answered.
  start("metrics_destinations = 1",
        "[spool]\nmode = \"sync\"\ndir = \"" + dir_.file("spool") + "\"\n");
  HttpReply r = inject(batch_json(
      {"ann@one.test", "bob@one.test", "reject@one.test", "defer@one.test", "cid@two.test"}));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(eventually(
      [&] {
        auto s = eng_.engine->stats();
        return s.delivered == 3 && s.bounced == 1 && s.deferred == 1;
      },
      kWait));
  auto m = scrape();
  EXPECT_EQ(m["# TYPE ringmail_recipient_outcomes"], "counter") << last_text_;
  EXPECT_EQ(num(m, outcome("delivered", "one.test")), 2) << last_text_;
  EXPECT_EQ(num(m, outcome("bounced", "one.test")), 1);
  EXPECT_EQ(num(m, outcome("deferred", "one.test")), 1);
  EXPECT_EQ(num(m, outcome("delivered", "other")), 1);
  EXPECT_EQ(num(m, outcome("bounced", "other")), 0);
  EXPECT_EQ(m.count(outcome("delivered", "two.test")), 0u) << "over metrics_destinations";
  EXPECT_EQ(num(m, "ringmail_queue_recipients{state=\"retry_waiting\"}"), 1);
  EXPECT_EQ(num(m, "ringmail_queue_recipients{state=\"ready\"}"), 0);
  EXPECT_EQ(num(m, "ringmail_queue_recipients{state=\"in_flight\"}"), 0);
  EXPECT_EQ(m["# TYPE ringmail_queue_recipients"], "gauge");
  EXPECT_EQ(num(m, "ringmail_ingest_batches_total{source=\"http\",status=\"accepted\"}"), 1);
  EXPECT_EQ(num(m, "ringmail_ingest_batches_total{source=\"socket\",status=\"accepted\"}"), 0);
  EXPECT_GE(num(m, "ringmail_smtp_connections_opened_total{}"), 2);
  EXPECT_EQ(num(m, "ringmail_smtp_connections{state=\"connecting\"}"), 0);
  EXPECT_GE(num(m, "ringmail_spool_written_bytes_total{}"), 100);
  EXPECT_EQ(m["# TYPE ringmail_spool_fsync_duration_seconds"], "histogram");
  double fsyncs = num(m, "ringmail_spool_fsync_duration_seconds_count{}");
  EXPECT_GE(fsyncs, 1);
  EXPECT_EQ(num(m, "ringmail_spool_fsync_duration_seconds_bucket{le=\"+Inf\"}"), fsyncs);
  EXPECT_EQ(num(m, "ringmail_tls_handshakes_total{result=\"ok\",side=\"client\"}"), 0);
  EXPECT_EQ(num(m, "ringmail_dns_queries_total{}"), 0) << "static route: no DNS";

  // More mail: the labelled destination keeps its label, "other" grows,
  // and no counter goes down.
  r = inject(batch_json({"dee@one.test", "eve@three.test"}));
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(eventually([&] { return eng_.engine->stats().delivered == 5; }, kWait));
  auto m2 = scrape();
  EXPECT_EQ(num(m2, outcome("delivered", "one.test")), 3) << last_text_;
  EXPECT_EQ(num(m2, outcome("delivered", "other")), 2);
  EXPECT_EQ(num(m2, "ringmail_ingest_batches_total{source=\"http\",status=\"accepted\"}"), 2);
  EXPECT_GE(num(m2, "ringmail_spool_fsync_duration_seconds_count{}"), fsyncs);
}

TEST_F(HttpTest, SlowHeadIsCutOffAndConnectionsAreBounded) {
  start("header_timeout = \"300ms\"\nmax_connections = 2");
  auto connect = [&] {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  };
  auto read_all = [](int fd) {
    std::string got;
    char buf[4096];
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 5000) == 1) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) {
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  };
  int slow = connect();
  ASSERT_EQ(::write(slow, "GET /metrics HTTP/1.1\r\nHo", 25), 25);
  int second = connect();
  // A third client is over max_connections: 503 and closed.
  int third = connect();
  std::string refused = read_all(third);
  EXPECT_EQ(refused.rfind("HTTP/1.1 503 ", 0), 0u) << refused;
  // The trickled head passes its deadline: 408 and closed.
  std::string cut = read_all(slow);
  EXPECT_EQ(cut.rfind("HTTP/1.1 408 ", 0), 0u) << cut;
  EXPECT_NE(cut.find("http.header_timeout"), std::string::npos);
  ::close(slow);
  ::close(second);
  ::close(third);
  // Keep-alive: two requests on one connection, answered in order.
  int ka = connect();
  std::string two =
      "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n"
      "Connection: close\r\n\r\n";
  ASSERT_EQ(::write(ka, two.data(), two.size()), static_cast<ssize_t>(two.size()));
  std::string both = read_all(ka);
  size_t first = both.find("HTTP/1.1 404 ");
  size_t second_reply = both.find("HTTP/1.1 200 ");
  EXPECT_EQ(first, 0u) << both;
  EXPECT_NE(second_reply, std::string::npos);
  EXPECT_NE(both.find("ringmail_queue_recipients"), std::string::npos);
  ::close(ka);
}

}  // namespace
}  // namespace ringmail::testing
