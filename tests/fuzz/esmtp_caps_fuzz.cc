// EHLO capability parsing: the fuzz bytes are an EHLO reply stream, parsed
// by the reply parser first (as the delivery session does), and also used
// raw as Reply::text (a hostile text the parser would never produce).
// Properties: no crash; SIZE is 0 or credible; only known AUTH bits.
#include <string>

#include "proto/esmtp_caps.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

namespace {

void check(const Capabilities& c) {
  FUZZ_CHECK(c.size_limit == 0 || c.size_limit >= Capabilities::kMinCredibleSize);
  FUZZ_CHECK(c.size_limit == 0 || c.size_advertised);
  const uint32_t known = kAuthPlain | kAuthLogin | kAuthCramMd5 | kAuthXoauth2 | kAuthScramSha256;
  FUZZ_CHECK((c.auth & ~known) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ReplyParser p;
  ParseResult r = p.parse(std::span<const char>(bytes.data(), bytes.size()));
  if (r.status == ParseStatus::kDone) {
    check(parse_ehlo_capabilities(p.reply()));
  }
  Reply raw;
  raw.code = 250;
  raw.text.assign(bytes);
  Capabilities c = parse_ehlo_capabilities(raw);
  check(c);
  // Capabilities only ever come from lines after the first.
  if (raw.text.find('\n') == std::string::npos) {
    FUZZ_CHECK(!c.pipelining && !c.size_advertised && c.auth == 0);
  }
  return 0;
}
