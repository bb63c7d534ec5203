// Address parser (RFC 5321 Mailbox + SMTPUTF8).
// Properties: an accepted address is within the length limits, contains no
// byte that could inject a command or header, prints back to itself, and
// parses again to the same result; domain helpers never crash.
#include <string>

#include "proto/address.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);  // exact-size heap copy
  ringmail::Result<Mailbox> m = parse_mailbox(input);
  if (m.ok()) {
    FUZZ_CHECK(input.size() <= kMaxMailbox);
    FUZZ_CHECK(!m->local.empty() && m->local.size() <= kMaxLocalPart);
    FUZZ_CHECK(!m->domain.empty() && m->domain.size() <= kMaxDomain);
    FUZZ_CHECK(m->str() == input);
    for (char ch : input) {
      unsigned char c = static_cast<unsigned char>(ch);
      FUZZ_CHECK(c >= 0x20 && c != 0x7f && c != '<' && c != '>');
    }
    bool non_ascii = false;
    for (char ch : input) {
      non_ascii |= static_cast<unsigned char>(ch) >= 0x80;
    }
    FUZZ_CHECK(m->utf8 == non_ascii);
    ringmail::Result<Mailbox> again = parse_mailbox(m->str());
    FUZZ_CHECK(again.ok() && again->local == m->local && again->domain == m->domain &&
               again->utf8 == m->utf8 && again->domain_literal == m->domain_literal);
    if (!m->domain_literal) {
      FUZZ_CHECK(validate_domain(m->domain).ok());
      std::string norm = normalize_domain(m->domain);
      FUZZ_CHECK(norm.size() == m->domain.size());
    }
  } else {
    FUZZ_CHECK(!m.error().message.empty());
  }
  ringmail::Result<void> d = validate_domain(input);
  if (d.ok()) {
    FUZZ_CHECK(!input.empty() && input.size() <= kMaxDomain && input.back() != '.');
  }
  std::string norm = normalize_domain(input);
  FUZZ_CHECK(norm.size() + 1 >= input.size());
  return 0;
}
