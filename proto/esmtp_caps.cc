#include "proto/esmtp_caps.h"

#include <string_view>

#include "proto/text_util.h"

namespace ringmail::proto {

namespace {

using internal::iequals;

// Splits off the next space-separated token; empty when none is left.
std::string_view next_token(std::string_view* rest) {
  size_t start = rest->find_first_not_of(' ');
  if (start == std::string_view::npos) {
    *rest = {};
    return {};
  }
  rest->remove_prefix(start);
  size_t end = rest->find(' ');
  std::string_view token = rest->substr(0, end);
  rest->remove_prefix(end == std::string_view::npos ? rest->size() : end);
  return token;
}

// SIZE parameter: digits only; overflow or junk means "no limit declared".
uint64_t parse_size(std::string_view v) {
  uint64_t n = 0;
  if (!internal::parse_u64(v, &n)) {
    return 0;
  }
  return n < Capabilities::kMinCredibleSize ? 0 : n;
}

uint32_t auth_mech_bit(std::string_view mech) {
  struct Entry {
    std::string_view name;
    uint32_t bit;
  };
  static constexpr Entry kMechs[] = {
      {"PLAIN", kAuthPlain},
      {"LOGIN", kAuthLogin},
      {"CRAM-MD5", kAuthCramMd5},
      {"XOAUTH2", kAuthXoauth2},
      {"SCRAM-SHA-256", kAuthScramSha256},
  };
  for (const Entry& e : kMechs) {
    if (iequals(mech, e.name)) {
      return e.bit;
    }
  }
  return 0;
}

void apply_line(Capabilities& caps, std::string_view line) {
  std::string_view rest = line;
  std::string_view keyword = next_token(&rest);
  // Old servers announce "AUTH=PLAIN LOGIN" (pre-RFC 4954 Outlook style).
  if (keyword.size() > 5 && iequals(keyword.substr(0, 5), "AUTH=")) {
    caps.auth |= auth_mech_bit(keyword.substr(5));
    keyword = "AUTH";
  }
  struct Flag {
    std::string_view name;
    bool Capabilities::*field;
  };
  static constexpr Flag kFlags[] = {
      {"PIPELINING", &Capabilities::pipelining},
      {"CHUNKING", &Capabilities::chunking},
      {"BINARYMIME", &Capabilities::binarymime},
      {"8BITMIME", &Capabilities::eightbitmime},
      {"SMTPUTF8", &Capabilities::smtputf8},
      {"STARTTLS", &Capabilities::starttls},
      {"ENHANCEDSTATUSCODES", &Capabilities::enhanced_status_codes},
      {"DSN", &Capabilities::dsn},
  };
  for (const Flag& f : kFlags) {
    if (iequals(keyword, f.name)) {
      caps.*(f.field) = true;
      return;
    }
  }
  if (iequals(keyword, "SIZE")) {
    caps.size_advertised = true;
    caps.size_limit = parse_size(next_token(&rest));
    return;
  }
  if (iequals(keyword, "AUTH")) {
    for (std::string_view mech = next_token(&rest); !mech.empty(); mech = next_token(&rest)) {
      caps.auth |= auth_mech_bit(mech);
    }
  }
}

}  // namespace

Capabilities parse_ehlo_capabilities(const Reply& reply) {
  Capabilities caps;
  std::string_view text = reply.text;
  size_t nl = text.find('\n');
  if (nl == std::string_view::npos) {
    return caps;
  }
  text.remove_prefix(nl + 1);
  size_t examined = 0;
  while (!text.empty() && examined < Capabilities::kMaxCapabilities) {
    nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    apply_line(caps, line);
    ++examined;
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  return caps;
}

}  // namespace ringmail::proto
