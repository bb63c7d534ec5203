// ringmail-sink end to end: the built binary (RINGMAIL_SINK) on 127.0.0.1:0,
// driven by a tiny blocking SMTP client and by Postfix's smtp-source.
#include <sys/resource.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "tests/e2e/sink_test_util.h"

namespace ringmail::testing {
namespace {

constexpr const char* kSmtpSource = "/usr/sbin/smtp-source";

class SinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (sink_path().empty()) {
      GTEST_SKIP() << "RINGMAIL_SINK is not set";
    }
  }
  // Starts the sink; fails the test when it does not come up.
  void start(std::vector<std::string> args = {}, std::vector<std::string> env = {}) {
    ASSERT_TRUE(sink_.start(std::move(args), 1, std::move(env))) << sink_.error();
  }
  // Connects, reads the greeting and says EHLO.
  std::unique_ptr<SmtpClient> session() {
    auto c = std::make_unique<SmtpClient>(sink_.port());
    EXPECT_TRUE(c->connected());
    EXPECT_EQ(c->read_reply().code, 220);
    EXPECT_EQ(c->command("EHLO client.test").code, 250);
    return c;
  }
  // One transaction by DATA; returns the end-of-data reply.
  static Reply send_message(SmtpClient& c, std::string_view from, std::vector<std::string> rcpts,
                            std::string_view body = "Subject: t\r\n\r\nhello\r\n") {
    std::string cmds = "MAIL FROM:<" + std::string(from) + ">\r\n";
    for (const auto& r : rcpts) {
      cmds += "RCPT TO:<" + r + ">\r\n";
    }
    cmds += "DATA\r\n";
    c.send(cmds);
    Reply mail = c.read_reply();
    if (mail.code != 250) {
      return mail;
    }
    bool any = false;
    for (size_t i = 0; i < rcpts.size(); ++i) {
      any = c.read_reply().code == 250 || any;
    }
    Reply data = c.read_reply();
    if (!any || data.code != 354) {
      return data;
    }
    c.send(std::string(body) + ".\r\n");
    return c.read_reply();
  }

  SinkProcess sink_;
};

bool has_line(const Reply& r, std::string_view line) {
  return std::find(r.lines.begin(), r.lines.end(), line) != r.lines.end();
}

TEST_F(SinkTest, GreetingAndDefaultCapabilities) {
  start({"--hostname", "sink.test"});
  SmtpClient c(sink_.port());
  Reply greeting = c.read_reply();
  EXPECT_EQ(greeting.code, 220);
  EXPECT_EQ(greeting.first().rfind("sink.test ", 0), 0u) << greeting.first();
  Reply ehlo = c.command("EHLO client.test");
  ASSERT_EQ(ehlo.code, 250);
  EXPECT_EQ(ehlo.first(), "sink.test");
  for (const char* cap :
       {"PIPELINING", "CHUNKING", "SIZE 52428800", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"}) {
    EXPECT_TRUE(has_line(ehlo, cap)) << cap;
  }
  EXPECT_EQ(c.command("MAIL FROM:<a@example.test>").str(), "250 2.1.0 Ok");
  EXPECT_EQ(c.command("QUIT").code, 221);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(SinkTest, EveryCapabilityCanBeSwitchedOff) {
  start({"--hostname", "sink.test", "--no-pipelining", "--no-chunking", "--no-size",
         "--no-8bitmime", "--no-enhancedstatuscodes", "--no-smtputf8"});
  SmtpClient c(sink_.port());
  ASSERT_EQ(c.read_reply().code, 220);
  Reply ehlo = c.command("EHLO client.test");
  ASSERT_EQ(ehlo.code, 250);
  EXPECT_EQ(ehlo.lines, std::vector<std::string>{"sink.test"});
  // No enhanced status codes in replies either.
  EXPECT_EQ(c.command("MAIL FROM:<a@example.test>").str(), "250 Ok");
  c.send("BDAT 1 LAST\r\nx");           // the chunk is read, then refused
  EXPECT_EQ(c.read_reply().code, 502);  // CHUNKING off
}

TEST_F(SinkTest, NoSizeWhenSizeWouldBeTheLastLine) {
  start({"--hostname", "sink.test", "--no-size", "--no-chunking", "--no-8bitmime",
         "--no-enhancedstatuscodes", "--no-smtputf8"});
  SmtpClient c(sink_.port());
  ASSERT_EQ(c.read_reply().code, 220);
  // The raw reply must end with a "250 " line after SIZE is removed.
  c.send("EHLO client.test\r\n");
  Reply ehlo = c.read_reply();
  EXPECT_EQ(ehlo.code, 250);
  EXPECT_EQ(ehlo.lines, (std::vector<std::string>{"sink.test", "PIPELINING"}));
  EXPECT_EQ(c.command("NOOP").code, 250);  // nothing left over in the stream
}

TEST_F(SinkTest, MaxMessageIsAdvertisedAndEnforced) {
  start({"--max-message", "1000", "--max-recipients", "2"});
  auto c = session();
  c->send("EHLO again\r\n");
  EXPECT_TRUE(has_line(c->read_reply(), "SIZE 1000"));
  EXPECT_EQ(c->command("MAIL FROM:<a@example.test> SIZE=2000").code, 552);
  Reply r = send_message(*c, "a@example.test", {"b@example.test"},
                         "Subject: big\r\n\r\n" + std::string(1200, 'x') + "\r\n");
  EXPECT_EQ(r.code, 552) << r.str();
  // The third recipient of a transaction gets 452 4.5.3.
  EXPECT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<b1@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<b2@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<b3@example.test>").str(), "452 4.5.3 Error: too many recipients");
}

TEST_F(SinkTest, PipelinedTransactionsAreCountedExactly) {
  start();
  auto c = session();
  // DATA transaction: the whole envelope in one write.
  c->send(
      "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
      "RCPT TO:<c@example.test>\r\nDATA\r\n");
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 354);
  c->send("Subject: one\r\n\r\n..dot\r\n.\r\n");
  EXPECT_EQ(c->read_reply().str(), "250 2.0.0 Ok");
  // BDAT transaction: envelope and content in one write.
  c->send("MAIL FROM:<a@example.test>\r\nRCPT TO:<d@example.test>\r\nBDAT 7 LAST\r\nhello\r\n");
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  ASSERT_TRUE(sink_.wait_stat("messages", 2)) << sink_.stats();
  EXPECT_EQ(sink_.stat("recipients"), 3);
  EXPECT_EQ(sink_.stat("connections"), 1);
  EXPECT_EQ(sink_.stat("rejected"), 0);
  EXPECT_GT(sink_.stat("bytes"), 100);
  EXPECT_GE(sink_.stat("elapsed_s"), 0);
}

TEST_F(SinkTest, MagicLocalPartsGiveTheDocumentedReplies) {
  start();
  auto c = session();
  EXPECT_EQ(c->command("MAIL FROM:<rejectsender@example.test>").str(),
            "550 5.7.1 Error: sender rejected");
  EXPECT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<reject@example.test>").first().substr(0, 5), "5.1.1");
  EXPECT_EQ(c->command("RCPT TO:<Defer@example.test>").code, 451);  // case-insensitive
  Reply full = c->command("RCPT TO:<full@example.test>");
  EXPECT_EQ(full.code, 452);
  EXPECT_EQ(full.first().substr(0, 5), "4.2.2");
  EXPECT_EQ(c->command("RSET").code, 250);

  Reply big = send_message(*c, "a@example.test", {"ok@example.test", "bigreject@example.test"});
  EXPECT_EQ(big.code, 552);
  EXPECT_EQ(big.first().substr(0, 5), "5.3.4");
  Reply rej = send_message(*c, "a@example.test", {"rejectdata@example.test"});
  EXPECT_EQ(rej.code, 554);
  EXPECT_EQ(rej.first().substr(0, 5), "5.7.1");
  Reply def = send_message(*c, "a@example.test", {"deferdata@example.test"});
  EXPECT_EQ(def.code, 451);
  EXPECT_EQ(def.first().substr(0, 5), "4.3.0");
  // Precedence: disconnect-in-data wins over the others.
  Reply drop =
      send_message(*c, "a@example.test", {"deferdata@example.test", "disconnect-in-data@x.test"});
  EXPECT_EQ(drop.code, 0) << drop.str();  // closed without a reply
  EXPECT_TRUE(c->closed_by_peer());

  ASSERT_TRUE(sink_.wait_stat("dropped", 1)) << sink_.stats();
  EXPECT_EQ(sink_.stat("messages"), 0);
  EXPECT_EQ(sink_.stat("rejected"), 2);
  EXPECT_EQ(sink_.stat("deferred"), 1);
  EXPECT_EQ(sink_.stat("rcpt_refused"), 3);
}

TEST_F(SinkTest, ClientHalfCloseStillGetsItsReplies) {
  start();
  auto c = session();
  c->send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRSET\r\n");
  ::shutdown(c->fd(), SHUT_WR);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_TRUE(c->closed_by_peer());
}

TEST_F(SinkTest, MaxConnectionsAnswers421Beyond) {
  start({"--max-connections", "2"});
  SmtpClient a(sink_.port());
  SmtpClient b(sink_.port());
  ASSERT_EQ(a.read_reply().code, 220);
  ASSERT_EQ(b.read_reply().code, 220);
  SmtpClient c(sink_.port());
  Reply refused = c.read_reply();
  EXPECT_EQ(refused.str(), "421 4.7.0 too many connections");
  EXPECT_TRUE(c.closed_by_peer());
  // A freed slot is reusable once the sink has seen the close.
  EXPECT_EQ(a.command("QUIT").code, 221);
  EXPECT_TRUE(a.closed_by_peer());
  bool admitted = eventually([&] {
    SmtpClient d(sink_.port());
    return d.read_reply().code == 220;
  });
  EXPECT_TRUE(admitted);
  EXPECT_EQ(b.command("NOOP").code, 250);
}

TEST_F(SinkTest, SigtermPrintsTheStatsLineAndExitsZero) {
  start();
  {
    auto c = session();
    EXPECT_EQ(send_message(*c, "a@example.test", {"b@example.test", "c@example.test"}).code, 250);
    // Still connected at SIGTERM: the sink must close it and exit anyway.
    std::string out;
    ASSERT_EQ(sink_.terminate(&out), 0);
    ASSERT_FALSE(out.empty());
    std::string line = out.substr(0, out.find('\n'));
    EXPECT_EQ(line.front(), '{');
    EXPECT_EQ(json_number(line, "messages"), 1);
    EXPECT_EQ(json_number(line, "recipients"), 2);
    EXPECT_EQ(json_number(line, "connections"), 1);
    for (const char* key :
         {"deferred", "rejected", "dropped", "rcpt_refused", "bytes", "elapsed_s"}) {
      EXPECT_GE(json_number(line, key), 0) << key;
    }
    EXPECT_EQ(sink_.stats(), line + "\n");  // the stats file has the final counts
  }
}

TEST_F(SinkTest, FaultRatiosAreDeterministicForASeed) {
  auto run = [&](const char* seed) {
    SinkProcess s;
    EXPECT_TRUE(s.start({"--defer-ratio", "0.3", "--reject-ratio", "0.2", "--seed", seed}))
        << s.error();
    SmtpClient c(s.port());
    c.read_reply();
    c.command("EHLO client.test");
    std::string codes;
    for (int i = 0; i < 100; ++i) {
      int code = send_message(c, "a@example.test", {"b@example.test"}).code;
      codes += code == 250 ? 'a' : code == 451 ? 'd' : code == 550 ? 'r' : '?';
    }
    return codes;
  };
  std::string first = run("7");
  EXPECT_EQ(first, run("7"));
  EXPECT_NE(first, run("8"));
  auto n = [&](char k) { return std::count(first.begin(), first.end(), k); };
  EXPECT_EQ(n('?'), 0);
  EXPECT_GT(n('d'), 10);
  EXPECT_GT(n('r'), 5);
  EXPECT_GT(n('a'), 30);
}

TEST_F(SinkTest, RatiosOfOneApplyToEveryTransaction) {
  {
    SinkProcess s;
    ASSERT_TRUE(s.start({"--reject-ratio", "1"})) << s.error();
    SmtpClient c(s.port());
    c.read_reply();
    c.command("EHLO client.test");
    EXPECT_EQ(send_message(c, "a@x.test", {"b@x.test"}).str(), "550 5.7.1 Error: message rejected");
    // Magic takes precedence over ratios.
    EXPECT_EQ(send_message(c, "a@x.test", {"deferdata@x.test"}).code, 451);
  }
  {
    SinkProcess s;
    ASSERT_TRUE(s.start({"--rcpt-defer-ratio", "1"})) << s.error();
    SmtpClient c(s.port());
    c.read_reply();
    c.command("EHLO client.test");
    c.command("MAIL FROM:<a@x.test>");
    EXPECT_EQ(c.command("RCPT TO:<b@x.test>").first().substr(0, 5), "4.2.1");
    EXPECT_EQ(c.command("RCPT TO:<deferdata@x.test>").code, 250);  // magic: no RCPT fault
  }
  {
    SinkProcess s;
    ASSERT_TRUE(s.start({"--drop-ratio", "1"})) << s.error();
    SmtpClient c(s.port());
    c.read_reply();
    c.command("EHLO client.test");
    EXPECT_EQ(send_message(c, "a@x.test", {"b@x.test"}).code, 0);
    EXPECT_TRUE(s.wait_stat("dropped", 1));
  }
}

TEST_F(SinkTest, DeferFirstAttemptDefersEachAddressOnce) {
  start({"--defer-first-attempt"});
  auto c = session();
  EXPECT_EQ(c->command("MAIL FROM:<a@example.test>").code, 250);
  EXPECT_EQ(c->command("RCPT TO:<x@example.test>").str(),
            "451 4.7.1 Error: greylisted, try again later");
  EXPECT_EQ(c->command("RCPT TO:<x@EXAMPLE.test>").code, 250);  // domain case-insensitive
  EXPECT_EQ(c->command("RCPT TO:<y@example.test>").code, 451);
  // Seen on another connection too.
  SmtpClient d(sink_.port());
  d.read_reply();
  d.command("EHLO client.test");
  EXPECT_EQ(send_message(d, "a@example.test", {"y@example.test"}).code, 250);
}

TEST_F(SinkTest, GreetingDelay) {
  start({"--greeting-delay-ms", "200"});
  auto t0 = Clock::now();
  SmtpClient c(sink_.port());
  ASSERT_EQ(c.read_reply().code, 220);
  EXPECT_GE(Clock::now() - t0, milliseconds(200));
  // A client that talks before the greeting is refused (early talker).
  SmtpClient early(sink_.port());
  early.send("EHLO early.test\r\n");
  EXPECT_EQ(early.read_reply().code, 554);
}

TEST_F(SinkTest, EndOfDataDelayIsAsynchronous) {
  constexpr milliseconds kDelay(1000);
  start({"--delay-ms", std::to_string(kDelay.count())});
  auto c = session();
  c->send("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n");
  c->read_reply();
  c->read_reply();
  ASSERT_EQ(c->read_reply().code, 354);
  auto t0 = Clock::now();
  c->send("hello\r\n.\r\n");
  // While that session waits for its reply, others are served (up to
  // their own end of data, which is delayed too).
  auto other = session();
  EXPECT_EQ(other->command("MAIL FROM:<a@x.test>").code, 250);
  EXPECT_EQ(other->command("RCPT TO:<b@x.test>").code, 250);
  EXPECT_EQ(other->command("RSET").code, 250);
  EXPECT_LT(Clock::now() - t0, kDelay) << "another session was held up";
  EXPECT_EQ(c->read_reply().code, 250);
  EXPECT_GE(Clock::now() - t0, kDelay);
  EXPECT_TRUE(sink_.wait_stat("messages", 1));
}

TEST_F(SinkTest, IdleTimeoutAnswers421AndCloses) {
  start({"--idle-timeout-ms", "200"});
  auto c = session();
  Reply r = c->read_reply();  // no command: wait for the timeout
  EXPECT_EQ(r.code, 421);
  EXPECT_EQ(r.first().substr(0, 5), "4.4.2");
  EXPECT_TRUE(c->closed_by_peer());
}

TEST_F(SinkTest, DumpDirKeepsEnvelopeAndUnstuffedBody) {
  TempDir dump;
  start({"--dump-dir", dump.path()});
  auto c = session();
  EXPECT_EQ(send_message(*c, "a@example.test", {"b@example.test", "c@example.test"},
                         "Subject: d\r\n\r\n..leading dot\r\nend\r\n")
                .code,
            250);
  auto eml = read_file(dump.file("1.eml"));
  ASSERT_TRUE(eml.has_value());
  EXPECT_EQ(*eml,
            "X-Sink-Mail-From: <a@example.test>\r\nX-Sink-Rcpt-To: <b@example.test>\r\n"
            "X-Sink-Rcpt-To: <c@example.test>\r\nSubject: d\r\n\r\n.leading dot\r\nend\r\n");
  // The null sender, by BDAT.
  c->send("MAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nBDAT 4 LAST\r\nx\r\ny");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c->read_reply().code, 250);
  }
  EXPECT_EQ(read_file(dump.file("2.eml")).value_or(""),
            "X-Sink-Mail-From: <>\r\nX-Sink-Rcpt-To: <b@example.test>\r\nx\r\ny");
}

TEST_F(SinkTest, BareLineEndsAreRejectedOrNormalized) {
  start();
  auto c = session();
  Reply r = send_message(*c, "a@x.test", {"b@x.test"}, "bare\nlf\r\n");
  EXPECT_EQ(r.code, 550);
  EXPECT_EQ(r.first().substr(0, 5), "5.6.0");
  SinkProcess n;
  ASSERT_TRUE(n.start({"--bare-line=normalize"})) << n.error();
  SmtpClient d(n.port());
  d.read_reply();
  d.command("EHLO client.test");
  EXPECT_EQ(send_message(d, "a@x.test", {"b@x.test"}, "bare\nlf\r\n").code, 250);
}

TEST_F(SinkTest, SurvivesGarbageAndAbruptDisconnects) {
  start({"--max-commands", "500"});
  std::string junk;
  for (int i = 0; i < 20000; ++i) {
    junk.push_back(static_cast<char>((i * 7919) % 251));
  }
  const std::vector<std::string> cuts = {
      "",     // before the greeting is read
      "EHL",  // mid-command
      "EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nSubject: half",  // mid-DATA
      "EHLO x\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nBDAT 100000 LAST\r\nabc",  // mid-BDAT
      junk,                      // binary junk, long lines
      std::string(100000, 'A'),  // one huge line
  };
  for (int round = 0; round < 20; ++round) {
    for (const std::string& cut : cuts) {
      SmtpClient c(sink_.port());
      ASSERT_TRUE(c.connected());
      c.send(cut);
      if (round % 2 == 0) {
        c.reset();
      }
    }
  }
  // A client that pipelines commands and never reads the replies: the sink
  // stops reading it once its queued replies are bounded; the reset ends it.
  {
    SmtpClient greedy(sink_.port());
    greedy.read_reply();
    greedy.command("EHLO x");
    timeval tv{0, 300'000};
    ::setsockopt(greedy.fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string rsets;
    for (int i = 0; i < 10'000; ++i) {
      rsets += "RSET\r\n";
    }
    for (int i = 0; i < 200 && greedy.send(rsets); ++i) {
    }
    greedy.reset();
  }
  ASSERT_TRUE(sink_.wait_stat("connections", 20 * 6 + 1)) << sink_.stats();
  auto c = session();
  EXPECT_EQ(send_message(*c, "a@x.test", {"b@x.test"}).code, 250);
  EXPECT_EQ(sink_.terminate(), 0);
}

TEST_F(SinkTest, PipelinedRepliesAreNeverLostUnderBackPressure) {
  start();
  auto c = session();
  constexpr int kCommands = 200'000;  // about 2.8 MB of replies
  int replies = 0;
  std::thread reader([&] {
    for (int i = 0; i < kCommands; ++i) {
      if (c->read_reply().code != 250) {
        break;
      }
      ++replies;
    }
  });
  std::string rsets;
  for (int i = 0; i < 1000; ++i) {
    rsets += "RSET\r\n";
  }
  for (int i = 0; i < kCommands / 1000; ++i) {
    ASSERT_TRUE(c->send(rsets));
  }
  reader.join();
  EXPECT_EQ(replies, kCommands);
}

TEST_F(SinkTest, ManyIdleConnections) {
  constexpr int kIdle = 10'000;
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < kIdle + 100) {
    GTEST_SKIP() << "descriptor limit " << rl.rlim_cur << " too low";
  }
  start();
  std::vector<std::unique_ptr<SmtpClient>> idle;
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(std::make_unique<SmtpClient>(sink_.port()));
    ASSERT_TRUE(idle.back()->connected()) << i;
  }
  ASSERT_TRUE(sink_.wait_stat("connections", kIdle, milliseconds(30'000))) << sink_.stats();
  auto c = session();
  EXPECT_EQ(send_message(*c, "a@x.test", {"b@x.test"}).code, 250);
  EXPECT_EQ(idle.front()->read_reply().code, 220);
  EXPECT_EQ(sink_.terminate(), 0);
}

TEST_F(SinkTest, ThreadsShareTheLoadAndSumTheirCounts) {
  start({"--threads", "2"});
  std::vector<std::unique_ptr<SmtpClient>> clients;
  for (int i = 0; i < 16; ++i) {
    clients.push_back(session());
  }
  for (int round = 0; round < 5; ++round) {
    for (auto& c : clients) {
      EXPECT_EQ(send_message(*c, "a@x.test", {"b@x.test", "c@x.test"}).code, 250);
    }
  }
  EXPECT_TRUE(sink_.wait_stat("messages", 80)) << sink_.stats();
  EXPECT_EQ(sink_.stat("recipients"), 160);
  EXPECT_EQ(sink_.stat("connections"), 16);
}

TEST_F(SinkTest, FallbackRingFeatures) {
  // Single-shot accept and the oldest-kernel ring set-up.
  start({}, {"RINGMAIL_RING_FEATURES=none"});
  for (int i = 0; i < 3; ++i) {
    auto c = session();
    EXPECT_EQ(send_message(*c, "a@x.test", {"b@x.test"}).code, 250);
  }
  EXPECT_TRUE(sink_.wait_stat("messages", 3));
}

TEST_F(SinkTest, ListensOnIpv6AndWritesThePortFile) {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) {
    GTEST_SKIP() << "no IPv6";
  }
  ::close(fd);
  TempDir d;
  std::string port_file = d.file("port");
  ASSERT_TRUE(
      sink_.start({"--listen", "[::1]:0", "--listen", "127.0.0.1:0", "--port-file", port_file}, 2))
      << sink_.error();
  EXPECT_EQ(read_file(port_file).value_or(""), std::to_string(sink_.port(0)) + "\n");
  SmtpClient c6(sink_.port(0), /*ipv6=*/true);
  EXPECT_EQ(c6.read_reply().code, 220);
  SmtpClient c4(sink_.port(1));
  EXPECT_EQ(c4.read_reply().code, 220);
}

TEST_F(SinkTest, HelpAndBadOptions) {
  auto run = [](const std::string& args) {
    std::string cmd = sink_path() + " " + args + " >/dev/null 2>&1";
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  EXPECT_EQ(run("--help"), 0);
  EXPECT_EQ(run("--no-such-option"), 2);
  EXPECT_EQ(run("--defer-ratio 1.5"), 2);
  EXPECT_EQ(run("--listen 127.0.0.1"), 2);
  EXPECT_EQ(run("--defer-ratio 0.6 --reject-ratio 0.6"), 2);
}

// Real-peer interop with Postfix's smtp-source.
class SmtpSourceTest : public SinkTest {
 protected:
  void SetUp() override {
    SinkTest::SetUp();
    if (::access(kSmtpSource, X_OK) != 0) {
      GTEST_SKIP() << kSmtpSource << " not installed";
    }
  }
  int smtp_source(const std::string& args) {
    std::string cmd =
        std::string(kSmtpSource) + " " + args +
        " -f a@example.test -t b@example.test 127.0.0.1:" + std::to_string(sink_.port()) +
        " >/dev/null 2>&1";
    int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
};

TEST_F(SmtpSourceTest, CountsEveryMessage) {
  start();
  ASSERT_EQ(smtp_source("-s 5 -m 200 -l 2048"), 0);
  ASSERT_TRUE(sink_.wait_stat("messages", 200)) << sink_.stats();
  EXPECT_EQ(sink_.stat("recipients"), 200);
  EXPECT_EQ(sink_.stat("connections"), 200);
}

TEST_F(SmtpSourceTest, ReusedConnectionsAndSeveralRecipients) {
  start({"--threads", "2"});
  ASSERT_EQ(smtp_source("-s 10 -m 500 -r 3 -l 4096 -d"), 0);
  ASSERT_TRUE(sink_.wait_stat("messages", 500)) << sink_.stats();
  EXPECT_EQ(sink_.stat("recipients"), 1500);
  EXPECT_EQ(sink_.stat("connections"), 10);
}

}  // namespace
}  // namespace ringmail::testing
