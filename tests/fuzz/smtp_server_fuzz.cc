// Whole server session (Dovecot fuzz-smtp-server style): the fuzz bytes are
// the client's byte stream, delivered in pieces; the driver answers every
// decision positively, runs "TLS" instantly when asked, and checks the
// session's contract at every step.
// Properties: the session always makes progress or asks for input; every
// reply line is "ddd[ -]text\r\n"; nothing is ever executed after an
// accepted STARTTLS from the plaintext that followed it; bodies stay within
// max_message; the loop ends.
#include <cstring>
#include <memory>
#include <string>

#include "proto/smtp_server.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;
using Action = ServerSession::Action;

namespace {

ServerConfig config_from(uint8_t flags) {
  ServerConfig c;
  c.pipelining = (flags & 1) == 0;
  c.starttls = (flags & 2) != 0;
  c.auth_mechs = (flags & 4) != 0 ? (kAuthPlain | kAuthLogin) : 0;
  c.allow_plaintext_auth = (flags & 8) != 0;
  c.bare_line = (flags & 16) != 0 ? BareLinePolicy::kNormalize : BareLinePolicy::kReject;
  c.binarymime = (flags & 32) != 0;
  c.dsn = (flags & 64) != 0;
  c.require_auth = (flags & 128) != 0;
  c.max_message = 4096;
  c.max_recipients = 8;
  c.max_line = 256;
  c.max_auth_line = 512;
  c.max_output = 1024;
  return c;
}

// Every reply line: three digits, ' ' or '-', printable text, CRLF.
void check_output(std::string_view out) {
  while (!out.empty()) {
    size_t lf = out.find('\n');
    FUZZ_CHECK(lf != std::string_view::npos && lf >= 5 && out[lf - 1] == '\r');
    std::string_view line = out.substr(0, lf - 1);
    FUZZ_CHECK(line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
               line[2] >= '0' && line[2] <= '9');
    FUZZ_CHECK(line.size() == 3 || line[3] == ' ' || line[3] == '-');
    for (char c : line) {
      FUZZ_CHECK(c >= 0x20 && c < 0x7f);
    }
    out.remove_prefix(lf + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  ServerConfig config = config_from(in.byte());
  uint32_t seed = in.byte();
  std::string_view stream = in.rest();
  ServerSession s(config);
  s.start();
  fuzz::Splitter split(seed);
  std::string pending;
  size_t pos = 0;
  size_t steps = 0;
  bool closed = false;
  while (!closed) {
    FUZZ_CHECK(++steps < 100000);
    std::unique_ptr<char[]> buf(new char[pending.size()]);
    std::memcpy(buf.get(), pending.data(), pending.size());
    ServerSession::FeedResult r = s.feed(std::span<const char>(buf.get(), pending.size()));
    FUZZ_CHECK(r.consumed <= pending.size());
    pending.erase(0, r.consumed);
    check_output(s.output());
    s.consume_output(s.output().size());
    switch (r.action) {
      case Action::kDecide: {
        const Decision& d = s.decision();
        FUZZ_CHECK(d.kind != DecisionKind::kNone);
        if (d.kind == DecisionKind::kMessage) {
          FUZZ_CHECK(d.transaction->body.size() <= config.max_message);
          FUZZ_CHECK(d.transaction->body_size <= config.max_message);
          FUZZ_CHECK(!d.transaction->recipients.empty());
        }
        if (d.kind == DecisionKind::kRcpt) {
          FUZZ_CHECK(d.transaction->recipients.size() < config.max_recipients);
        }
        s.accept();
        FUZZ_CHECK(s.decision().kind == DecisionKind::kNone || s.closed());
        break;
      }
      case Action::kStartTls:
        FUZZ_CHECK(pending.empty());  // all plaintext after STARTTLS was discarded
        s.tls_established();
        break;
      case Action::kClose:
        closed = true;
        break;
      case Action::kFlush:
        FUZZ_CHECK(!pending.empty());
        break;
      case Action::kNeedInput:
        FUZZ_CHECK(pending.empty());
        if (pos >= stream.size()) {
          s.close_with(421, "4.4.2 end of input");
          check_output(s.output());
          closed = true;
          break;
        }
        {
          size_t n = split.next(stream.size() - pos);
          pending.append(stream.substr(pos, n));
          pos += n;
        }
        break;
    }
  }
  FUZZ_CHECK(s.closed());
  return 0;
}
