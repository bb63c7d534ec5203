// Configuration reload of an embedded engine (Engine::reload, the C API's
// ringmail_reload): new limits reach mail already queued, a transaction
// under way finishes where it started, DKIM keys are read again (dkimpy
// verifies the signatures), a file that does not load changes nothing,
// and changes that need a restart are named, not applied. ringmaild's
// side (SIGHUP, `ringmail-ctl reload`, submission certificates) is in
// operations_test.cc.
//
// Environment: RINGMAIL_SINK, PYTHON3, OPENSSL.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include "tests/e2e/dkim_util.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/hostile_server.h"
#include "tests/e2e/sink_test_util.h"

#include <ringmail/ringmail_c.h>

namespace ringmail::testing {
namespace {

std::string route_to(uint16_t port) {
  return "[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n";
}

Batch batch(const std::string& id, const std::vector<std::string>& rcpts,
            std::string message = message_of(800)) {
  Batch b;
  b.batch_id = id;
  b.sender = "sender@example.com";
  b.message = std::move(message);
  b.recipients = rcpts;
  return b;
}

std::vector<std::string> at(const std::string& domain, size_t n, const std::string& prefix) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back(prefix + std::to_string(i) + "@" + domain);
  }
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Reload, NewLimitsReachMailAlreadyQueued) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  const std::string base = route_to(sink.port()) + "[engine]\nshards = 1\n";
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(base + "[delivery]\nmax_rcpts_per_txn = 10\n").ok());
  ASSERT_NE(e.engine->control("pause *").find("\"ok\":true"), std::string::npos);
  ASSERT_EQ(e.engine->submit(batch("held", at("limits.test", 12, "r"))).accepted, 12u);

  auto r = e.reload(base + "[delivery]\nmax_rcpts_per_txn = 3\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->applied, std::vector<std::string>{"delivery"});
  EXPECT_TRUE(r->restart_required.empty());

  ASSERT_NE(e.engine->control("resume *").find("\"ok\":true"), std::string::npos);
  ASSERT_TRUE(e.events.wait_finals(12));
  // Twelve recipients queued under a limit of 10 go out three at a time.
  EXPECT_EQ(e.engine->stats().transactions, 4u);
  EXPECT_EQ(e.engine->stats().delivered, 12u);
}

TEST(Reload, ATransactionUnderWayFinishesOnTheRouteItStartedOn) {
  std::promise<void> got_message, release;
  auto released = release.get_future().share();
  HostileServer first([&](Peer& p) {
    p.send("220 first.test ESMTP\r\n");
    if (!p.command() || !p.send("250 first.test\r\n")) {
      return;
    }
    for (const char* reply : {"250 sender ok\r\n", "250 rcpt ok\r\n", "354 go on\r\n"}) {
      if (!p.command() || !p.send(reply)) {
        return;
      }
    }
    if (!p.read_until("\r\n.\r\n")) {
      return;
    }
    got_message.set_value();
    released.wait_for(std::chrono::seconds(30));
    p.send("250 2.0.0 queued on first\r\n");
    while (p.command()) {
      p.send("221 bye\r\n");
    }
  });
  ASSERT_TRUE(first.ok());
  SinkProcess second;
  ASSERT_TRUE(second.start({})) << second.error();

  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(first.port()) + "[delivery]\npipelining = false\n").ok());
  ASSERT_EQ(e.engine->submit(batch("inflight", {"a@moving.test"})).accepted, 1u);
  ASSERT_EQ(got_message.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);

  auto r = e.reload(route_to(second.port()) + "[delivery]\npipelining = false\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->applied, std::vector<std::string>{"routing"});
  release.set_value();
  ASSERT_TRUE(e.events.wait_finals(1));
  auto evs = e.events.events("a@moving.test");
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].type, EventType::kDelivered) << evs[0].json;
  EXPECT_NE(evs[0].response.find("queued on first"), std::string::npos) << evs[0].json;
  EXPECT_EQ(second.stat("recipients"), 0);

  // Mail accepted after the reload takes the new route.
  ASSERT_EQ(e.engine->submit(batch("after", {"b@moving.test"})).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(2));
  auto after = e.events.events("b@moving.test");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].type, EventType::kDelivered) << after[0].json;
  EXPECT_EQ(after[0].peer, "127.0.0.1:" + std::to_string(second.port())) << after[0].json;
}

TEST(Reload, AConfigurationThatDoesNotLoadChangesNothing) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  TempDir dir;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) + "[delivery]\nmax_rcpts_per_txn = 1\n").ok());

  // An invalid value: refused at parsing, before the engine sees it.
  auto bad = Config::parse("[delivery]\nmax_rcpts_per_txn = 0\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("delivery.max_rcpts_per_txn"), std::string::npos);

  // A DKIM key file that cannot be read: refused by the reload itself.
  const std::string missing = dir.file("missing.pem");
  auto r = e.reload(route_to(sink.port()) +
                    "[delivery]\nmax_rcpts_per_txn = 5\n[[dkim]]\ndomain = \"example.com\"\n"
                    "selector = \"s1\"\nkey_file = \"" +
                    missing + "\"\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, FailureKind::kConfig);
  EXPECT_NE(r.error().message.find(missing), std::string::npos) << r.error().message;

  // The running limit (1 recipient per transaction) is still in force.
  ASSERT_EQ(e.engine->submit(batch("same", at("same.test", 3, "s"))).accepted, 3u);
  ASSERT_TRUE(e.events.wait_finals(3));
  EXPECT_EQ(e.engine->stats().transactions, 3u);
}

TEST(Reload, SectionsThatNeedARestartAreNamedAndKept) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  TempDir dir;
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(sink.port()) + "[engine]\nshards = 1\n").ok());
  auto r = e.reload(route_to(sink.port()) +
                    "[engine]\nshards = 2\n[limits]\nmax_queued_recipients = 5\n"
                    "[suppression]\nfile = \"" +
                    dir.file("suppressed.log") +
                    "\"\ninvalid_ttl = \"1h\"\n[retry]\nmax_age = \"1h\"\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(contains(r->applied, "retry"));
  EXPECT_TRUE(contains(r->applied, "suppression"));
  EXPECT_TRUE(contains(r->restart_required, "engine"));
  EXPECT_TRUE(contains(r->restart_required, "limits"));
  EXPECT_TRUE(contains(r->restart_required, "suppression.file"));
  EXPECT_FALSE(contains(r->applied, "engine"));
  // Kept as running: one shard, and the queue limit still the default
  // (ten recipients are accepted, not five).
  EXPECT_EQ(e.engine->loop_iterations().size(), 1u);
  EXPECT_EQ(e.engine->submit(batch("kept", at("kept.test", 10, "k"))).accepted, 10u);
  ASSERT_TRUE(e.events.wait_finals(10));
  struct stat st {};
  EXPECT_NE(::stat(dir.file("suppressed.log").c_str(), &st), 0) << "suppression.file applied";

  // The same file again: nothing changed, nothing to report.
  auto again = e.reload(route_to(sink.port()) + "[engine]\nshards = 1\n");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(contains(again->applied, "retry")) << "back to the default max_age";
}

TEST(Reload, AnEngineStartedFromTextHasNoFileToReadAgain) {
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(route_to(free_port())).ok());
  auto r = e.engine->reload();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind, FailureKind::kConfig);
  EXPECT_NE(r.error().message.find("not started from a configuration file"), std::string::npos)
      << r.error().message;
  EXPECT_NE(e.engine->control("reload").find("\"ok\":false"), std::string::npos);
}

TEST(Reload, TheCApiReloadsFromTextAndFromTheStartFile) {
  SinkProcess sink;
  ASSERT_TRUE(sink.start({})) << sink.error();
  TempDir dir;
  const std::string path = dir.file("ringmail.toml");
  auto write = [&](const std::string& extra) {
    dkimtest::write_file(path,
                         "[ingest]\nsocket = \"\"\n[events]\nfile = \"\"\n[spool]\nmode = "
                         "\"off\"\n" +
                             route_to(sink.port()) + extra);
  };
  write("");
  char* error = nullptr;
  ringmail_engine* eng = ringmail_start_file(path.c_str(), &error);
  ASSERT_NE(eng, nullptr) << (error != nullptr ? error : "");

  write("[retry]\nmax_age = \"2h\"\n");
  char* json = ringmail_reload(eng, nullptr, &error);
  ASSERT_NE(json, nullptr) << (error != nullptr ? error : "");
  EXPECT_STREQ(json,
               "{\"ok\":true,\"command\":\"reload\",\"applied\":[\"retry\"],"
               "\"restart_required\":[]}");
  ringmail_free_string(json);

  write("[retry]\nmax_age = \"nonsense\"\n");
  EXPECT_EQ(ringmail_reload(eng, nullptr, &error), nullptr);
  ASSERT_NE(error, nullptr);
  EXPECT_NE(std::string(error).find("retry.max_age"), std::string::npos) << error;
  ringmail_free_string(error);
  error = nullptr;

  json = ringmail_reload(eng,
                         "log_level = \"warning\"\n[ingest]\nsocket = \"\"\n[events]\nfile = "
                         "\"\"\n[spool]\nmode = \"off\"\n",
                         &error);
  ASSERT_NE(json, nullptr) << (error != nullptr ? error : "");
  std::string reply = json;
  ringmail_free_string(json);
  EXPECT_NE(reply.find("\"log_level\""), std::string::npos) << reply;
  EXPECT_NE(reply.find("\"routing\""), std::string::npos) << reply;
  ringmail_stop(eng, 0);
}

// Key rotation: a new key written over the configured file is used for
// batches accepted after the reload; dkimpy verifies each message with the
// public key of its time, and not with the other one.
TEST(Reload, DkimKeysAreReadAgain) {
  if (std::string why = dkimtest::dkimpy_missing(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  TempDir dir;
  const std::string gen = "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out OUT";
  const std::string old_record = dkimtest::openssl_key(dir.path(), "old", gen, false);
  const std::string new_record = dkimtest::openssl_key(dir.path(), "new", gen, false);
  const std::string key = dir.file("dkim.pem");
  dkimtest::write_file(key, dkimtest::slurp(dir.file("old.pem")));

  const std::string dump = dir.file("dump");
  ASSERT_EQ(::mkdir(dump.c_str(), 0755), 0);
  SinkProcess sink;
  ASSERT_TRUE(sink.start({"--dump-dir", dump})) << sink.error();
  const std::string toml = route_to(sink.port()) +
                           "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey_file = \"" +
                           key + "\"\n";
  EmbeddedEngine e;
  ASSERT_TRUE(e.start(toml).ok());
  const std::string msg =
      "From: Sender <sender@example.com>\r\nTo: a@dkim.test\r\nSubject: rotation\r\n\r\nBody.\r\n";
  ASSERT_EQ(e.engine->submit(batch("before", {"a@dkim.test"}, msg)).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(1));

  dkimtest::write_file(key, dkimtest::slurp(dir.file("new.pem")));
  auto r = e.reload(toml);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->applied.empty()) << "the configuration itself did not change";
  ASSERT_EQ(e.engine->submit(batch("after", {"b@dkim.test"}, msg)).accepted, 1u);
  ASSERT_TRUE(e.events.wait_finals(2));
  ASSERT_TRUE(sink.wait_stat("recipients", 2));

  std::vector<std::string> files;
  for (const auto& f : std::filesystem::directory_iterator(dump)) {
    files.push_back(f.path().string());
  }
  std::sort(files.begin(), files.end());
  ASSERT_EQ(files.size(), 2u);
  std::string manifest;
  const std::string name = "s1._domainkey.example.com.";
  for (size_t i = 0; i < files.size(); ++i) {
    manifest +=
        "old" + std::to_string(i) + "\t" + files[i] + "\t1\t" + name + "=" + old_record + "\n";
    manifest +=
        "new" + std::to_string(i) + "\t" + files[i] + "\t1\t" + name + "=" + new_record + "\n";
  }
  std::string out;
  auto v = dkimtest::dkimpy_verify(dir.path(), manifest, &out);
  // One message verifies with the old key only, the other with the new
  // key only.
  const bool zero_old = v["old0"] == "PASS", one_old = v["old1"] == "PASS";
  const bool zero_new = v["new0"] == "PASS", one_new = v["new1"] == "PASS";
  EXPECT_TRUE((zero_old && one_new && !zero_new && !one_old) ||
              (one_old && zero_new && !one_new && !zero_old))
      << out;
}

}  // namespace
}  // namespace ringmail::testing
