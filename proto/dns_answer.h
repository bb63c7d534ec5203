/// dns_answer.h — reading DNS responses (RFC 1035) for mail routing.
///
/// c-ares moves the packets (servers, retries, TCP fallback on truncation);
/// this parser reads what came back, because routing needs more than
/// c-ares' convenience parsers give: record TTLs (the cache honours them),
/// the CNAME chain, and the SOA of a negative answer (RFC 2308 negative
/// caching TTL).
///
/// What is extracted, for the question name `qname`:
///   - the CNAME chain in the answer section is followed from qname (at most
///     Limits::max_cname_hops; a loop or a longer chain is an error);
///   - MX, A and AAAA records owned by the final name;
///   - min_ttl: the smallest TTL of the records used (chain included);
///   - negative_ttl: min(SOA TTL, SOA MINIMUM) from the authority section,
///     when present.
/// Names are returned lower-case without the trailing dot; the root name
/// (a null MX's exchange, RFC 7505) is "".
///
/// Threats and bounds: every length and pointer is checked against the
/// message bounds; compression pointers may only point backwards and at
/// most kMaxPointerJumps are followed per name (a pointer loop is an
/// error, not a hang); names are capped at 255 octets; at most
/// Limits::max_records answer records are examined. TTLs with the high bit
/// set are read as 0 (RFC 2181 8).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto::dns {

enum class Rcode : uint8_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
};

enum Type : uint16_t {
  kTypeA = 1,
  kTypeNs = 2,
  kTypeCname = 5,
  kTypeSoa = 6,
  kTypeMx = 15,
  kTypeTxt = 16,
  kTypeAaaa = 28,
};

struct MxRecord {
  uint16_t preference = 0;
  std::string exchange;  // lower-case, no trailing dot; "" = the root (null MX)
};

struct Answer {
  uint8_t rcode = 0;  // Rcode value (other values possible)
  bool truncated = false;
  std::string final_name;  // qname after following CNAMEs
  std::vector<MxRecord> mx;
  std::vector<std::array<uint8_t, 4>> a;
  std::vector<std::array<uint8_t, 16>> aaaa;
  uint32_t min_ttl = 0;  // meaningful when some record was used
  bool has_records = false;
  bool has_negative_ttl = false;
  uint32_t negative_ttl = 0;
  size_t ignored_records = 0;  // beyond max_records, or of other owners/types
};

struct Limits {
  size_t max_records = 512;
  size_t max_cname_hops = 8;
};

inline constexpr int kMaxPointerJumps = 64;

/// Parses a response to a question (qname, qtype). Structural damage
/// (truncated message, bad pointers, overlong names, CNAME loops) is an
/// error whose message says what was wrong, for a "deferred" event.
Result<Answer> parse_answer(std::span<const uint8_t> message, std::string_view qname,
                            uint16_t qtype, const Limits& limits = {});

/// Lower-cases and removes one trailing dot.
std::string canonical_name(std::string_view name);

/// Appends a DNS query for (qname, qtype) with recursion desired (tests and
/// fuzzers build answers from it). Error when the name is not encodable.
Result<void> build_query(std::string& out, uint16_t id, std::string_view qname, uint16_t qtype);

}  // namespace ringmail::proto::dns
