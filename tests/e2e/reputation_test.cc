// Reputation features end to end: the engine's own DKIM signatures
// (rsa-sha256 and ed25519-sha256, verified by dkimpy as ringmail-sink
// stored the messages), bulk-sender header fields covered by the
// signatures, personalised batches (each recipient gets exactly its own
// values; a missing variable is a per-recipient rejection), the
// suppression list (hard bounces, unsubscribe reports, operator commands,
// persistence), and a personalised signed job that survives a crash in
// the spool and is sent again byte for byte.
//
// Environment: RINGMAIL_SINK, RINGMAILD, PYTHON3, OPENSSL.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "proto/template.h"
#include "tests/e2e/dkim_util.h"
#include "tests/e2e/harness.h"
#include "tools/batch_client.h"

namespace ringmail::testing {
namespace {

using dkimtest::dkimpy_verify;
using dkimtest::openssl_key;

std::string vars_of(const std::map<std::string, std::string>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    proto::append_var(out, k, v);
  }
  return out;
}

/// The header section of a stored message (up to the empty line).
std::string head_of(const std::string& msg) {
  return msg.substr(0, msg.find("\r\n\r\n") + 2);
}

/// Every h= value of the DKIM-Signature fields in `msg` (unfolded).
std::vector<std::string> signed_header_lists(const std::string& msg) {
  std::vector<std::string> out;
  std::string head = head_of(msg);
  size_t pos = 0;
  while ((pos = head.find("DKIM-Signature:", pos)) != std::string::npos) {
    size_t end = pos;
    do {  // the field ends at a CRLF not followed by white space
      end = head.find("\r\n", end + 1);
    } while (end != std::string::npos && end + 2 < head.size() &&
             (head[end + 2] == ' ' || head[end + 2] == '\t'));
    std::string field = head.substr(pos, end - pos);
    std::string flat;
    for (char c : field) {
      if (c != '\r' && c != '\n' && c != ' ' && c != '\t') {
        flat.push_back(c);
      }
    }
    size_t h = flat.find(";h=");
    if (h != std::string::npos) {
      size_t e = flat.find(';', h + 3);
      std::string list = flat.substr(h + 3, e == std::string::npos ? e : e - h - 3);
      for (char& c : list) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      out.push_back(list);
    }
    pos = end == std::string::npos ? head.size() : end;
  }
  return out;
}

class Reputation : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string missing = dkimtest::dkimpy_missing();
    ASSERT_TRUE(missing.empty()) << missing;
    ASSERT_FALSE(sink_path().empty()) << "RINGMAIL_SINK is not set";
    records_["rsa"] = openssl_key(
        dir_.path(), "rsa", "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out OUT", false);
    records_["ed"] = openssl_key(dir_.path(), "ed", "genpkey -algorithm ed25519 -out OUT", true);
    ASSERT_FALSE(HasFailure());
  }

  std::string dkim_toml() const {
    return "[[dkim]]\ndomain = \"example.com\"\nselector = \"rsa\"\nkey_file = \"" +
           dir_.file("rsa.pem") +
           "\"\ncanonicalization = \"relaxed/relaxed\"\n"
           "[[dkim]]\ndomain = \"example.com\"\nselector = \"ed\"\nkey_file = \"" +
           dir_.file("ed.pem") + "\"\ncanonicalization = \"relaxed/simple\"\n";
  }

  // Starts a sink dumping into a fresh directory `name`.
  std::string start_sink(SinkProcess& sink, const std::string& name,
                         std::vector<std::string> extra = {}) {
    const std::string dump = dir_.file(name);
    EXPECT_EQ(::mkdir(dump.c_str(), 0755), 0);
    extra.push_back("--dump-dir");
    extra.push_back(dump);
    EXPECT_TRUE(sink.start(extra)) << sink.error();
    return dump;
  }

  // dkimpy verdicts ("PASS PASS") for each file.
  std::map<std::string, std::string> verify(const std::vector<std::string>& files,
                                            std::string* out) {
    std::string manifest;
    for (size_t i = 0; i < files.size(); ++i) {
      manifest += "m" + std::to_string(i) + "\t" + files[i] +
                  "\t2\trsa._domainkey.example.com.=" + records_["rsa"] +
                  "\ted._domainkey.example.com.=" + records_["ed"] + "\n";
    }
    return dkimpy_verify(dir_.path(), manifest, out);
  }

  // Waits for n dumps in `dump` and returns them by envelope recipient.
  std::map<std::string, std::string> dumps(const std::string& dump, size_t n) {
    std::map<std::string, std::string> by_rcpt;
    for (size_t i = 1; i <= n; ++i) {
      const std::string file = dump + "/" + std::to_string(i) + ".eml";
      EXPECT_TRUE(eventually([&] { return ::access(file.c_str(), F_OK) == 0; }))
          << "no dump " << file;
      std::string body = read_file(file).value_or("");
      size_t p = body.find("X-Sink-Rcpt-To: <");
      EXPECT_NE(p, std::string::npos) << file;
      if (p == std::string::npos) {
        continue;
      }
      size_t e = body.find('>', p);
      by_rcpt[body.substr(p + 17, e - p - 17)] = file;
    }
    return by_rcpt;
  }

  TempDir dir_;
  std::map<std::string, std::string> records_;
};

const std::string kPlain =
    "From: News <news@example.com>\r\n"
    "To: list@example.net\r\n"
    "Subject: plain\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    ".a dot line\r\n"
    "text {{ not a template }} here\r\n";

TEST_F(Reputation, EngineSignsAndAddsBulkHeaders) {
  SinkProcess sink;
  const std::string dump = start_sink(sink, "bulk");
  ASSERT_FALSE(HasFailure());
  EmbeddedEngine e;
  auto started = e.start("[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink.port()) +
                         "\"\n" + dkim_toml());
  ASSERT_TRUE(started.ok()) << started.error().message;
  Batch b;
  b.sender = "bounces@example.com";
  b.message = kPlain;
  b.recipients = {"a@example.net"};
  b.options = {"list_unsubscribe=https://u.example.com/unsub?l=7",
               "list_unsubscribe_mailto=mailto:unsub@example.com", "list_unsubscribe_post=true",
               "feedback_id=camp7:cust3:newsletter:ringmail"};
  Ack ack = e.engine->submit(b);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  ASSERT_TRUE(e.events.wait_finals(1, milliseconds(60'000)));
  ASSERT_EQ(e.events.events("a@example.net").back().type, EventType::kDelivered);
  auto files = dumps(dump, 1);
  ASSERT_EQ(files.count("a@example.net"), 1u);
  const std::string msg = read_file(files["a@example.net"]).value_or("");
  const std::string head = head_of(msg);
  // Two URIs: the field may be folded after the comma.
  size_t lu = head.find("\r\nList-Unsubscribe: <https://u.example.com/unsub?l=7>,");
  ASSERT_NE(lu, std::string::npos) << head;
  EXPECT_NE(head.find("<mailto:unsub@example.com>\r\n", lu), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            std::string::npos)
      << head;
  EXPECT_NE(head.find("\r\nFeedback-ID: camp7:cust3:newsletter:ringmail\r\n"), std::string::npos)
      << head;
  EXPECT_NE(head.find("\r\nDate: "), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nMessage-ID: <"), std::string::npos) << head;
  // The message's own "{{" is not a placeholder: it arrives as sent.
  EXPECT_NE(msg.find("\r\n\r\n.a dot line\r\ntext {{ not a template }} here\r\n"),
            std::string::npos);
  auto lists = signed_header_lists(msg);
  ASSERT_EQ(lists.size(), 2u) << head;
  for (const std::string& h : lists) {
    for (const char* name :
         {"list-unsubscribe", "list-unsubscribe-post", "feedback-id", "date", "message-id"}) {
      EXPECT_NE((":" + h + ":").find(std::string(":") + name + ":"), std::string::npos)
          << name << " not in h=" << h;
    }
  }
  std::string out;
  auto v = verify({files["a@example.net"]}, &out);
  EXPECT_EQ(v["m0"], "PASS PASS") << out;
  // Signed once per message, not per recipient: an unknown dkim_domain is
  // a whole-batch refusal that says why.
  b.options = {"dkim_domain=other.example"};
  ack = e.engine->submit(b);
  EXPECT_EQ(ack.status, AckStatus::kRejected);
  EXPECT_NE(ack.reason.find("DKIM"), std::string::npos) << ack.reason;
  // An invalid option value is refused before anything is taken.
  b.options = {"list_unsubscribe=http://insecure.example.com/u"};
  ack = e.engine->submit(b);
  EXPECT_EQ(ack.status, AckStatus::kRejected);
}

const std::string kTemplate =
    "From: News <news@example.com>\r\n"
    "To: {{name}} <{{addr}}>\r\n"
    "Subject: Hello {{name}}\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Dear {{name}},\r\n"
    "your code is {{code}}.\r\n"
    "{{code}}\r\n"
    "literal {{{{braces}}\r\n";

TEST_F(Reputation, PersonalisedBatchGetsOwnValuesAndVerifies) {
  SinkProcess sink;
  const std::string dump = start_sink(sink, "personal");
  ASSERT_FALSE(HasFailure());
  EmbeddedEngine e;
  auto started = e.start("[engine]\nshards = 2\n[routing]\ndefault = \"127.0.0.1:" +
                         std::to_string(sink.port()) + "\"\n" + dkim_toml());
  ASSERT_TRUE(started.ok()) << started.error().message;
  Batch b;
  b.sender = "bounces@example.com";
  b.message = kTemplate;
  b.options = {"personalise=true", "list_unsubscribe=https://u.example.com/u/{{token}}"};
  struct R {
    std::string addr, name, code, token;
  };
  const std::vector<R> rs = {{"ann@one.example", "Ann", "A-111", "tokA"},
                             {"bob@two.example", "Bob", ".B-222", "tokB"},  // dot at line start
                             {"cy@three.example", "C\xc3\xbf", "C-333", "tokC"}};
  for (const R& r : rs) {
    b.recipients.push_back(r.addr);
    b.recipient_vars.push_back(
        vars_of({{"name", r.name}, {"addr", r.addr}, {"code", r.code}, {"token", r.token}}));
  }
  // No `code`: refused alone, with the variable named.
  b.recipients.push_back("dee@one.example");
  b.recipient_vars.push_back(
      vars_of({{"name", "Dee"}, {"addr", "dee@one.example"}, {"token", "tokD"}}));
  Ack ack = e.engine->submit(b);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  EXPECT_EQ(ack.accepted, 3u);
  ASSERT_EQ(ack.rejections.size(), 1u);
  EXPECT_EQ(ack.rejections[0].index, 3u);
  EXPECT_EQ(ack.rejections[0].reason, RejectReason::kTemplate);
  EXPECT_NE(ack.rejections[0].text.find("code"), std::string::npos) << ack.rejections[0].text;
  ASSERT_TRUE(e.events.wait_finals(3, milliseconds(60'000)));
  auto files = dumps(dump, 3);
  ASSERT_EQ(files.size(), 3u);
  std::vector<std::string> list;
  for (const R& r : rs) {
    ASSERT_EQ(files.count(r.addr), 1u) << r.addr;
    const std::string msg = read_file(files[r.addr]).value_or("");
    list.push_back(files[r.addr]);
    EXPECT_NE(msg.find("\r\nTo: " + r.name + " <" + r.addr + ">\r\n"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\r\nSubject: Hello " + r.name + "\r\n"), std::string::npos) << msg;
    EXPECT_NE(msg.find("\r\nList-Unsubscribe: <https://u.example.com/u/" + r.token + ">\r\n"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("\r\n\r\nDear " + r.name + ",\r\nyour code is " + r.code + ".\r\n" + r.code +
                       "\r\nliteral {{braces}}\r\n"),
              std::string::npos)
        << msg;
    for (const R& other : rs) {  // nobody else's values
      if (other.addr != r.addr) {
        EXPECT_EQ(msg.find(other.code), std::string::npos) << r.addr << " got " << other.code;
        EXPECT_EQ(msg.find(other.token), std::string::npos) << r.addr << " got " << other.token;
      }
    }
    EXPECT_EQ(msg.find("{{name}}"), std::string::npos);
  }
  std::string out;
  auto v = verify(list, &out);
  for (size_t i = 0; i < list.size(); ++i) {
    EXPECT_EQ(v["m" + std::to_string(i)], "PASS PASS") << list[i] << "\n" << out;
  }
  // Variables without personalise=true, and template syntax errors, refuse
  // the whole batch.
  Batch bad = b;
  bad.options = {};
  EXPECT_EQ(e.engine->submit(bad).status, AckStatus::kRejected);
  bad.options = {"personalise=true"};
  bad.message = "From: <news@example.com>\r\nSubject: {{ name}}\r\n\r\nx\r\n";
  Ack a2 = e.engine->submit(bad);
  EXPECT_EQ(a2.status, AckStatus::kRejected);
  EXPECT_NE(a2.reason.find("template"), std::string::npos) << a2.reason;
}

TEST_F(Reputation, SuppressionFromBouncesUnsubscribesAndOperator) {
  SinkProcess sink;
  const std::string dump = start_sink(sink, "suppress");
  ASSERT_FALSE(HasFailure());
  EmbeddedEngine e;
  auto started = e.start("[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink.port()) +
                         "\"\n[suppression]\nfile = \"" + dir_.file("suppression.log") + "\"\n");
  ASSERT_TRUE(started.ok()) << started.error().message;
  Batch b;
  b.sender = "bounces@example.com";
  b.message = message_of(300);
  // ringmail-sink answers RCPT TO:<reject@…> with 550 5.1.1.
  b.recipients = {"reject@example.net", "ok@example.net"};
  Ack ack = e.engine->submit(b);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  ASSERT_TRUE(e.events.wait_finals(2, milliseconds(60'000)));
  auto ev = e.events.events("reject@example.net");
  ASSERT_FALSE(ev.empty());
  ASSERT_EQ(ev.back().type, EventType::kBounced) << ev.back().json;
  EXPECT_EQ(ev.back().enhanced, "5.1.1");
  // The entry's note quotes the reply once: code, enhanced code, text.
  std::string listed = e.engine->control("suppression list reject@example.net");
  EXPECT_NE(listed.find("\"note\":\"550 5.1.1 Error: recipient rejected (batch "),
            std::string::npos)
      << listed;
  EXPECT_EQ(listed.find("550 550"), std::string::npos) << listed;

  // Next batch: the bounced address is suppressed, as is one the platform
  // reports unsubscribed in this same batch; the others go.
  Batch b2 = b;
  b2.recipients = {"reject@example.net", "ok@example.net", "gone@example.net"};
  b2.unsubscribed = {"Gone@EXAMPLE.net", "elsewhere@example.org"};
  ack = e.engine->submit(b2);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  EXPECT_EQ(ack.accepted, 2u);
  ASSERT_EQ(ack.rejections.size(), 1u);  // "Gone@" differs in the local part: not this one
  EXPECT_EQ(ack.rejections[0].index, 0u);
  EXPECT_EQ(ack.rejections[0].reason, RejectReason::kSuppressed);
  EXPECT_NE(ack.rejections[0].text.find("invalid_recipient"), std::string::npos)
      << ack.rejections[0].text;
  ASSERT_TRUE(e.events.wait_finals(4, milliseconds(60'000)));

  Batch b3 = b;
  b3.recipients = {"elsewhere@example.org", "ok@example.net"};
  ack = e.engine->submit(b3);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  ASSERT_EQ(ack.rejections.size(), 1u);
  EXPECT_EQ(ack.rejections[0].reason, RejectReason::kSuppressed);
  EXPECT_NE(ack.rejections[0].text.find("unsubscribed"), std::string::npos);
  ASSERT_TRUE(e.events.wait_finals(5, milliseconds(60'000)));

  // Operator commands.
  std::string r = e.engine->control("suppression check reject@EXAMPLE.NET");
  EXPECT_NE(r.find("\"suppressed\":true"), std::string::npos) << r;
  EXPECT_NE(r.find("\"reason\":\"invalid_recipient\""), std::string::npos) << r;
  r = e.engine->control("suppression list *@example.*");
  EXPECT_NE(r.find("\"total\":3"), std::string::npos) << r;
  r = e.engine->control("suppression add manual@example.net manual 0 complained by phone");
  EXPECT_NE(r.find("\"ok\":true"), std::string::npos) << r;
  r = e.engine->control("suppression remove reject@example.net");
  EXPECT_NE(r.find("\"removed\":true"), std::string::npos) << r;
  r = e.engine->control("suppression remove nobody@example.net");
  EXPECT_NE(r.find("\"removed\":false"), std::string::npos) << r;
  r = e.engine->control("suppression frobnicate");
  EXPECT_NE(r.find("\"ok\":false"), std::string::npos) << r;

  // Removed: accepted again (and bounced again by the sink).
  Batch b4 = b;
  b4.recipients = {"reject@example.net", "manual@example.net"};
  ack = e.engine->submit(b4);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  EXPECT_EQ(ack.accepted, 1u);
  ASSERT_EQ(ack.rejections.size(), 1u);
  EXPECT_EQ(ack.rejections[0].index, 1u);
  EXPECT_NE(ack.rejections[0].text.find("manual"), std::string::npos);
  ASSERT_TRUE(e.events.wait_finals(6, milliseconds(60'000)));
  EXPECT_EQ(e.events.events("reject@example.net").size(), 2u);

  // The list persists: a new engine on the same file refuses them.
  e.engine->shutdown(milliseconds(0));
  EmbeddedEngine e2;
  started = e2.start("[routing]\ndefault = \"127.0.0.1:" + std::to_string(sink.port()) +
                     "\"\n[suppression]\nfile = \"" + dir_.file("suppression.log") + "\"\n");
  ASSERT_TRUE(started.ok()) << started.error().message;
  Batch b5 = b;
  b5.recipients = {"reject@example.net", "manual@example.net", "elsewhere@example.org",
                   "ok@example.net"};
  ack = e2.engine->submit(b5);
  ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
  EXPECT_EQ(ack.accepted, 1u);
  EXPECT_EQ(ack.rejections.size(), 3u);
  ASSERT_TRUE(e2.events.wait_finals(1, milliseconds(60'000)));
}

// A personalised, signed job acknowledged into the spool; ringmaild is
// killed after the receiver's 250 and before the outcome is journaled, so
// the restarted daemon sends the recovered copy again: byte-identical
// (same rendering, same deterministic signatures) and still verifying.
TEST_F(Reputation, SpooledPersonalisedJobIsResentIdentically) {
  const std::string ringmaild = env_or("RINGMAILD", "");
  ASSERT_FALSE(ringmaild.empty()) << "RINGMAILD is not set";
  SinkProcess sink;
  const std::string dump = start_sink(sink, "spooled");
  ASSERT_FALSE(HasFailure());
  const std::string sock = dir_.file("rm.sock");
  std::ofstream(dir_.file("ringmail.toml"))
      << "log_level = \"warning\"\n[engine]\nshards = 2\n[ingest]\nsocket = \"" << sock
      << "\"\n[events]\nfile = \"\"\n[spool]\nmode = \"sync\"\ndir = \"" << dir_.file("spool")
      << "\"\n[routing]\ndefault = \"127.0.0.1:" << sink.port() << "\"\n"
      << dkim_toml();
  ::setenv("RINGMAIL_FAILPOINT", "delivered_before_journal:1", 1);
  Child daemon;
  ASSERT_TRUE(
      daemon.start({ringmaild, "--config", dir_.file("ringmail.toml")}, dir_.path(), "ringmaild1"));
  ::unsetenv("RINGMAIL_FAILPOINT");
  ASSERT_TRUE(eventually([&] { return tools::BatchClient::connect(sock, "probe", 1'000).ok(); },
                         milliseconds(30'000)))
      << daemon.err();
  {
    auto client = tools::BatchClient::connect(sock, "reputation-test");
    ASSERT_TRUE(client.ok()) << client.error().message;
    proto::BatchView bv;
    bv.sender = "bounces@example.com";
    bv.has_sender = true;
    bv.message = kTemplate;
    bv.recipients = {"ann@one.example"};
    std::string vars =
        vars_of({{"name", "Ann"}, {"addr", "ann@one.example"}, {"code", "Z-9"}, {"token", "t9"}});
    bv.recipient_vars = {vars};
    bv.options = {"personalise=true", "list_unsubscribe=https://u.example.com/u/{{token}}"};
    client->queue_batch(bv);
    auto f = client->next(30'000);
    ASSERT_TRUE(f.ok() && *f) << (f.ok() ? "timeout" : f.error().message);
    ASSERT_EQ((*f)->type, proto::FrameType::kAck);
    auto ack = proto::decode_ack((*f)->payload);
    ASSERT_TRUE(ack.ok());
    ASSERT_EQ(ack->status, proto::AckStatus::kAccepted) << ack->reason;
  }
  // The failpoint kills it right after the sink's 250.
  daemon.wait(milliseconds(60'000));
  ASSERT_FALSE(daemon.running()) << "the failpoint did not stop ringmaild";
  const std::string first = dump + "/1.eml";
  ASSERT_EQ(::access(first.c_str(), F_OK), 0);
  Child again;
  ASSERT_TRUE(
      again.start({ringmaild, "--config", dir_.file("ringmail.toml")}, dir_.path(), "ringmaild2"));
  const std::string second = dump + "/2.eml";
  ASSERT_TRUE(eventually([&] { return ::access(second.c_str(), F_OK) == 0; }, milliseconds(60'000)))
      << again.err();
  std::string a = read_file(first).value_or("a");
  std::string b = read_file(second).value_or("b");
  EXPECT_EQ(a, b);
  EXPECT_NE(a.find("your code is Z-9."), std::string::npos) << a;
  std::string out;
  auto v = verify({second}, &out);
  EXPECT_EQ(v["m0"], "PASS PASS") << out;
  again.terminate();
}

}  // namespace
}  // namespace ringmail::testing
