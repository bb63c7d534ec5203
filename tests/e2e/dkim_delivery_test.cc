// A DKIM-signed message delivered by the engine through real receiving
// servers still verifies (dkimpy) as the receivers stored it:
//   - aiosmtpd (an independent Python SMTP server): DATA, so the dot-stuffed
//     form is sent and unstuffed by the receiver;
//   - ringmail-sink with CHUNKING: BDAT;
//   - ringmail-sink --no-chunking: DATA.
// The message has dot lines, a lone ".", trailing whitespace, 8-bit text,
// a long line and trailing empty lines; it is signed rsa-sha256
// relaxed/relaxed and ed25519-sha256 simple/simple (byte-exact transport).
//
// PresignedMessageVerifiesAfterDataAndBdat: the platform's message arrives
// signed (engine/dkim.h used as a library). EngineSignsWithConfiguredKeys
// is the same path with the engine signing from [[dkim]] itself
// (Runtime::build_jobs passes the signer to MessageInit).
//
// Environment: RINGMAIL_SINK, PYTHON3, OPENSSL.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <time.h>

#include <string>
#include <vector>

#include "engine/dkim.h"
#include "tests/e2e/dkim_util.h"
#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

using dkimtest::dkimpy_verify;
using dkimtest::openssl_key;
using dkimtest::write_file;

constexpr const char* kAiosmtpd = R"PY(
import os, signal, sys
from aiosmtpd.controller import Controller

class Dump:
    def __init__(self, d):
        self.d = d
        self.n = 0
    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        path = os.path.join(self.d, "%d.eml" % self.n)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 stored"

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
c = Controller(Dump(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]), decode_data=False)
c.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
)PY";

const std::string kMessage =
    "From: Sender <sender@example.com>\r\n"
    "To: rcpt@example.net\r\n"
    "Subject: caf\xc3\xa9 delivery test \r\n"
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <delivery@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    ".leading dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "trailing whitespace \t \r\n"
    "Gr\xc3\xbc\xc3\x9f"
    "e\r\n" +
    std::string(900, 'x') +
    "\r\n"
    "\r\n"
    "\r\n";

class DkimDelivery : public ::testing::Test {
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

  std::vector<engine::DkimKey> dkim_config() const {
    std::vector<engine::DkimKey> cfg(2);
    cfg[0].domain = cfg[1].domain = "example.com";
    cfg[0].selector = "rsa";
    cfg[0].key_file = dir_.file("rsa.pem");
    cfg[0].canonicalization = "relaxed/relaxed";
    cfg[1].selector = "ed";
    cfg[1].key_file = dir_.file("ed.pem");
    cfg[1].canonicalization = "simple/simple";
    return cfg;
  }

  // Delivers `raw` through an embedded engine (extra TOML appended) to
  // 127.0.0.1:port and waits for the delivered event.
  void deliver(uint16_t port, const std::string& raw, const std::string& extra_toml = "") {
    EmbeddedEngine e;
    auto started =
        e.start("[routing]\ndefault = \"127.0.0.1:" + std::to_string(port) + "\"\n" + extra_toml);
    ASSERT_TRUE(started.ok()) << started.error().message;
    Batch b;
    b.sender = "bounces@example.com";
    b.message = raw;
    b.recipients = {"rcpt@example.net"};
    Ack ack = e.engine->submit(b);
    ASSERT_EQ(ack.status, AckStatus::kAccepted) << ack.reason;
    ASSERT_TRUE(e.events.wait_finals(1, milliseconds(60'000)));
    auto ev = e.events.events("rcpt@example.net");
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(ev.back().type, EventType::kDelivered) << ev.back().json;
  }

  // Waits for <dir>/1.eml and verifies it: both signatures must pass.
  void expect_verifies(const std::string& dump_dir, const std::string& name) {
    const std::string file = dump_dir + "/1.eml";
    ASSERT_TRUE(eventually([&] { return ::access(file.c_str(), F_OK) == 0; }))
        << "no dump at " << file;
    std::string manifest = name + "\t" + file +
                           "\t2\trsa._domainkey.example.com.=" + records_["rsa"] +
                           "\ted._domainkey.example.com.=" + records_["ed"] + "\n";
    std::string out;
    auto verdicts = dkimpy_verify(dir_.path(), manifest, &out);
    EXPECT_EQ(verdicts[name], "PASS PASS") << name << ": " << out;
    // The stored body is the sent one, byte for byte (dot lines unstuffed).
    std::string stored = read_file(file).value_or("");
    EXPECT_NE(stored.find("\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"), std::string::npos)
        << name;
  }

  // Starts aiosmtpd on a free port dumping into `dump_dir`.
  uint16_t start_aiosmtpd(Child& child, const std::string& dump_dir) {
    const std::string script = dir_.file("aiosmtpd_dump.py");
    write_file(script, kAiosmtpd);
    uint16_t port = free_port();
    EXPECT_TRUE(child.start({dkimtest::python(), script, std::to_string(port), dump_dir},
                            dir_.path(), "aiosmtpd"));
    EXPECT_TRUE(eventually([&] { return child.out().find("ready") != std::string::npos; }))
        << child.err();
    return port;
  }

  TempDir dir_;
  std::map<std::string, std::string> records_;
};

TEST_F(DkimDelivery, PresignedMessageVerifiesAfterDataAndBdat) {
  auto signer = engine::DkimSigner::create(dkim_config());
  ASSERT_TRUE(signer.ok()) << signer.error().message;
  auto sig = (*signer)->sign(kMessage, static_cast<int64_t>(::time(nullptr)));
  ASSERT_TRUE(sig.ok()) << sig.error().message;
  const std::string raw = *sig + kMessage;

  {  // aiosmtpd: DATA (aiosmtpd has no CHUNKING).
    const std::string dump = dir_.file("aiosmtpd");
    ASSERT_EQ(::mkdir(dump.c_str(), 0755), 0);
    Child server;
    uint16_t port = start_aiosmtpd(server, dump);
    ASSERT_FALSE(HasFailure());
    deliver(port, raw);
    expect_verifies(dump, "aiosmtpd_data");
  }
  for (bool chunking : {true, false}) {  // ringmail-sink: BDAT, then DATA
    const std::string dump = dir_.file(chunking ? "sink_bdat" : "sink_data");
    ASSERT_EQ(::mkdir(dump.c_str(), 0755), 0);
    SinkProcess sink;
    std::vector<std::string> args = {"--dump-dir", dump};
    if (!chunking) {
      args.push_back("--no-chunking");
    }
    ASSERT_TRUE(sink.start(args)) << sink.error();
    deliver(sink.port(), raw);
    expect_verifies(dump, chunking ? "sink_bdat" : "sink_data");
  }
}

// The engine signs the unsigned message with Config::dkim's keys.
TEST_F(DkimDelivery, EngineSignsWithConfiguredKeys) {
  std::string toml;
  for (const engine::DkimKey& k : dkim_config()) {
    toml += "[[dkim]]\ndomain = \"" + k.domain + "\"\nselector = \"" + k.selector +
            "\"\nkey_file = \"" + k.key_file + "\"\ncanonicalization = \"" + k.canonicalization +
            "\"\n";
  }
  for (bool chunking : {true, false}) {
    const std::string dump = dir_.file(chunking ? "engine_bdat" : "engine_data");
    ASSERT_EQ(::mkdir(dump.c_str(), 0755), 0);
    SinkProcess sink;
    std::vector<std::string> args = {"--dump-dir", dump};
    if (!chunking) {
      args.push_back("--no-chunking");
    }
    ASSERT_TRUE(sink.start(args)) << sink.error();
    deliver(sink.port(), kMessage, toml);
    expect_verifies(dump, chunking ? "engine_bdat" : "engine_data");
  }
}

}  // namespace
}  // namespace ringmail::testing
