/// message_body.h — preparing message bytes for the wire, and reading them
/// back on the server side.
///
/// Client side (ringmail sends): the platform's raw RFC 5322 bytes are first
/// normalised once per message: every bare LF and every bare CR becomes
/// CRLF, and a final CRLF is added when missing. RFC 5321 2.3.8 forbids a
/// client to send a bare CR or LF, and normalising before dot-stuffing is
/// what makes outbound SMTP smuggling impossible. The normalised form is
/// what BDAT sends; the dot-stuffed form (a '.' added before every line that
/// starts with '.') is what DATA sends, followed by ".\r\n".
///
/// Server side (ringmail-sink, the submission listener): DataReader reads
/// the DATA stream incrementally, stops only at <CRLF>.<CRLF> (RFC 5321
/// 4.1.1.4: never at <LF>.<LF>), removes the stuffing and enforces a size
/// limit. A bare CR or LF inside DATA is handled per BareLinePolicy.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "proto/parse.h"
#include "proto/result.h"

namespace ringmail::proto {

struct BodyInfo {
  bool eight_bit = false;        // a byte >= 0x80 occurs
  bool needs_stuffing = false;   // some line starts with '.'
  bool had_bare_line_end = false;  // normalisation changed a bare CR or LF
  size_t long_lines = 0;         // lines over 998 octets (RFC 5322 2.1.1)
  size_t lines = 0;
};

/// Appends the CRLF-normalised form of `raw` to `out` (see above) and
/// returns what it saw. An empty `raw` yields an empty body.
BodyInfo normalize_body(std::string_view raw, std::string& out);

/// Scans an already normalised body without copying. When the result says
/// !had_bare_line_end and the body ends with CRLF (or is empty), `raw` can be
/// used as the normalised form as it is.
BodyInfo scan_body(std::string_view raw);

/// Appends the dot-stuffed form of a normalised body (without the final
/// ".\r\n"). Returns the number of bytes appended.
size_t append_dot_stuffed(std::string_view normalized, std::string& out);

/// Reverse of append_dot_stuffed for a complete stuffed body (tests, fuzz
/// round trips).
std::string dot_unstuff(std::string_view stuffed);

enum class BareLinePolicy : uint8_t {
  kReject,     // a bare CR or LF inside DATA fails the message (Postfix 3.9 "strict")
  kNormalize,  // a bare CR or LF is stored as CRLF; it never ends DATA
};

/// Incremental DATA-phase reader (after the 354).
class DataReader {
 public:
  struct Limits {
    uint64_t max_message = 50ull << 20;  // unstuffed bytes kept; excess is counted, not stored
    BareLinePolicy bare_line = BareLinePolicy::kReject;
  };

  DataReader() : DataReader(Limits{}) {}
  explicit DataReader(Limits limits);

  /// Consumes DATA bytes. Unstuffed content (with CRLF line ends, without the
  /// terminating ".\r\n") is appended to `sink` when it is not null.
  /// kDone: the terminator was seen; `consumed` ends right after it. Check
  ///        too_big() and bare_line_seen() to decide the reply (the stream is
  ///        always read to its end so the session stays in sync).
  /// kNeedMore: everything was consumed.
  /// Never returns kError: DATA framing cannot fail, only the content can.
  /// After kDone, further calls return {kDone, 0} until reset().
  /// Storage: at most max_message bytes are appended to `sink`; under
  /// BareLinePolicy::kReject nothing more is appended once a bare CR or LF
  /// was seen (the message will be refused anyway).
  ParseResult feed(std::span<const char> in, std::string* sink);

  bool too_big() const { return size_ > limits_.max_message; }
  bool bare_line_seen() const { return bare_line_seen_; }
  uint64_t size() const { return size_; }  // unstuffed bytes seen so far
  void reset();

 private:
  void emit(const char* p, size_t n, std::string* sink);
  void bare(std::string* sink);

  Limits limits_;
  uint64_t size_ = 0;
  bool bare_line_seen_ = false;
  uint8_t state_ = 0;
};

}  // namespace ringmail::proto
