/// esmtp_caps.h — what an ESMTP server offers, from its EHLO reply.
///
/// Pure function over a parsed Reply. Bounded: at most kMaxCapabilities
/// lines are examined (threat: a server answering EHLO with 10,000 lines
/// cannot make us do unbounded work; the reply parser already caps lines).
/// Keywords are matched case-insensitively. Unknown keywords are ignored.
#pragma once

#include <cstdint>
#include <string>

#include "proto/smtp_reply.h"

namespace ringmail::proto {

enum AuthMech : uint32_t {
  kAuthPlain = 1u << 0,
  kAuthLogin = 1u << 1,
  kAuthCramMd5 = 1u << 2,
  kAuthXoauth2 = 1u << 3,
  kAuthScramSha256 = 1u << 4,
};

struct Capabilities {
  bool pipelining = false;            // RFC 2920
  bool chunking = false;              // RFC 3030 (BDAT)
  bool binarymime = false;            // RFC 3030
  bool eightbitmime = false;          // RFC 6152
  bool smtputf8 = false;              // RFC 6531
  bool starttls = false;              // RFC 3207
  bool enhanced_status_codes = false;  // RFC 2034
  bool dsn = false;                   // RFC 3461
  bool size_advertised = false;       // RFC 1870
  /// Declared maximum message size in bytes; 0 = no limit declared. A value
  /// that overflows or is below kMinCredibleSize is treated as "no limit"
  /// (a server claiming SIZE 1 is misconfigured; bouncing every message on
  /// that claim would be worse than letting the server decide).
  uint64_t size_limit = 0;
  uint32_t auth = 0;  // AuthMech bits

  static constexpr uint64_t kMinCredibleSize = 1024;
  static constexpr size_t kMaxCapabilities = 256;
};

/// `reply` is a positive EHLO reply; its first line (the server's domain and
/// greeting) is skipped. Returns default Capabilities for a single-line reply.
Capabilities parse_ehlo_capabilities(const Reply& reply);

}  // namespace ringmail::proto
