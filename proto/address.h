/// address.h — RFC 5321 mailbox parsing and validation.
///
/// Accepts `local@domain` (no angle brackets) where:
///   - local is a dot-atom or a quoted string (RFC 5321 4.1.2); UTF-8 is
///     allowed in atoms (RFC 6531) and marks the address as needing SMTPUTF8;
///   - domain is a hostname of LDH labels (UTF-8 U-labels allowed, marking
///     SMTPUTF8), or an address literal "[1.2.3.4]" / "[IPv6:...]";
///   - lengths follow RFC 5321 4.5.3.1: local <= 64, domain <= 255, each
///     label <= 63, the whole path <= 256 (254 octets for the mailbox).
/// CR, LF, NUL, other controls, spaces outside quotes, and angle brackets
/// are always refused: these are the bytes that would let an address inject
/// commands or headers.
#pragma once

#include <string>
#include <string_view>

#include "proto/result.h"

namespace ringmail::proto {

struct Mailbox {
  std::string local;
  std::string domain;  // as written (case preserved)
  bool utf8 = false;   // needs SMTPUTF8
  bool domain_literal = false;

  /// local@domain
  std::string str() const;
};

inline constexpr size_t kMaxLocalPart = 64;
inline constexpr size_t kMaxDomain = 255;
inline constexpr size_t kMaxLabel = 63;
inline constexpr size_t kMaxMailbox = 254;

/// Parses a bare mailbox. The error message names the problem in words fit
/// for a batch acknowledgement ("local part longer than 64 octets").
Result<Mailbox> parse_mailbox(std::string_view address);

/// Validates a domain name (not a literal).
Result<void> validate_domain(std::string_view domain);

/// ASCII-lowercases a domain for routing and queue keys; a trailing dot is
/// removed.
std::string normalize_domain(std::string_view domain);

}  // namespace ringmail::proto
