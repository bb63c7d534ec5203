// Command writer (client side), the bpo-43124 property: for any argument
// bytes, each writer either appends exactly one CRLF-terminated line with no
// other CR, LF or NUL, or fails and appends nothing. Written MAIL/RCPT
// lines parse back (server parser) to the same path: a round trip.
#include <string>

#include "proto/smtp_command.h"
#include "proto/smtp_server.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;

namespace {

const std::string kPrefix = "prefix";

// Checks the writer's output contract; returns the written line (without CRLF).
std::string check_line(const std::string& out, const Result<size_t>& r) {
  if (!r.ok()) {
    FUZZ_CHECK(out == kPrefix);
    return {};
  }
  FUZZ_CHECK(out.compare(0, kPrefix.size(), kPrefix) == 0);
  FUZZ_CHECK(*r == out.size() - kPrefix.size());
  std::string line = out.substr(kPrefix.size());
  FUZZ_CHECK(line.size() >= 2 && line.compare(line.size() - 2, 2, "\r\n") == 0);
  line.resize(line.size() - 2);
  for (char c : line) {
    FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0');
  }
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint8_t flags = in.byte();
  uint64_t number = in.u64();
  std::string a(in.slice(300));
  std::string b(in.rest());

  std::string out = kPrefix;
  check_line(out, append_ehlo(out, a));
  out = kPrefix;
  check_line(out, append_helo(out, a));

  MailParams params;
  params.size = number;
  params.body = static_cast<BodyType>(flags % 3);
  params.smtputf8 = (flags & 4) != 0;
  out = kPrefix;
  Result<size_t> mail = append_mail_from(out, a, params);
  std::string line = check_line(out, mail);
  if (mail.ok()) {
    Command cmd;
    CommandError err;
    FUZZ_CHECK(parse_command_line(line, &cmd, &err));
    FUZZ_CHECK(cmd.verb == SmtpVerb::kMail);
    FUZZ_CHECK(a.empty() ? cmd.null_path : cmd.path.str() == a);
    FUZZ_CHECK(cmd.mail.has_size == (number != 0));
    FUZZ_CHECK(!cmd.mail.has_size || cmd.mail.size == number);
    FUZZ_CHECK(cmd.mail.smtputf8 == params.smtputf8);
  }
  out = kPrefix;
  Result<size_t> rcpt = append_rcpt_to(out, a);
  line = check_line(out, rcpt);
  if (rcpt.ok()) {
    Command cmd;
    CommandError err;
    FUZZ_CHECK(parse_command_line(line, &cmd, &err));
    FUZZ_CHECK(cmd.verb == SmtpVerb::kRcpt && cmd.path.str() == a);
  }
  out = kPrefix;
  Result<size_t> auth = append_auth_plain(out, a, b);
  line = check_line(out, auth);
  if (auth.ok()) {
    Result<std::string> decoded = decode_base64(line.substr(11));
    FUZZ_CHECK(decoded.ok() && *decoded == std::string(1, '\0') + a + '\0' + b);
  }
  out = kPrefix;
  size_t n = append_bdat(out, number, (flags & 8) != 0);
  check_line(out, Result<size_t>(n));

  std::string enc;
  append_base64(enc, b);
  Result<std::string> dec = decode_base64(enc);
  FUZZ_CHECK(dec.ok() && *dec == b);
  Result<std::string> junk = decode_base64(b);  // must not crash on anything
  if (junk.ok()) {
    std::string re;
    append_base64(re, *junk);
    FUZZ_CHECK(re.size() == b.size());
  }
  return 0;
}
