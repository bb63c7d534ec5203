/// smtp_reply.h — SMTP server replies as the delivery side sees them:
/// typed, sanitised and bounded, plus an incremental parser.
///
/// Semantics (after Postfix's smtp_chat.c rules):
///   - `code` is the three-digit reply code (200..599 are accepted by the
///     parser; anything else is a syntax error).
///   - `enhanced` is the RFC 3463 status. When the peer sent one on the
///     first line whose class digit matches the code's first digit, it is
///     kept (`enhanced_from_peer` = true). Otherwise a default is
///     synthesised: x.0.0 for 2xx/4xx/5xx, and nothing for 3xx.
///   - `text` holds the text of every line (without the code and the
///     separator, enhanced code kept as the peer wrote it), lines joined
///     with '\n'. Non-printable bytes are replaced by '?'. It is capped at
///     Limits::max_text bytes; the excess is skipped, not an error.
///   - Every line of a multi-line reply must carry the same code; a
///     different code is a syntax error (a pipelining desync risk).
///   - Lines end with CRLF; a bare LF is tolerated as a line end (this is
///     the reply direction, where it cannot smuggle anything).
///
/// Threat: a hostile server may send endless lines, endless continuation
/// lines or megabyte lines. Limits bound all of them; exceeding max_line or
/// max_lines is a kLimit error and the caller must treat the connection as
/// broken (defer, never bounce).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "proto/parse.h"
#include "proto/result.h"

namespace ringmail::proto {

struct EnhancedCode {
  uint8_t cls = 0;  // 2, 4 or 5; 0 = absent
  uint16_t subject = 0;
  uint16_t detail = 0;

  bool present() const { return cls != 0; }
  /// "5.1.1", or "" when absent.
  std::string str() const;
  bool operator==(const EnhancedCode&) const = default;
};

/// Parses "c.s.d" at the start of `text` (digits: class 1, subject 1-3,
/// detail 1-3). Returns an absent code when `text` does not start with one.
/// `consumed` receives the length of the code including one following space.
EnhancedCode parse_enhanced_code(std::string_view text, size_t* consumed = nullptr);

struct Reply {
  uint16_t code = 0;
  EnhancedCode enhanced;
  bool enhanced_from_peer = false;
  bool multiline = false;
  std::string text;

  bool is_positive() const { return code >= 200 && code < 300; }
  bool is_intermediate() const { return code >= 300 && code < 400; }
  bool is_transient() const { return code >= 400 && code < 500; }
  bool is_permanent() const { return code >= 500 && code < 600; }
  /// "550 5.1.1 text" style single line for logs and events: the code, then
  /// the text with '\n' replaced by " / ".
  std::string summary() const;
};

/// Builds a reply from parts (engine-local outcomes such as timeouts use
/// this so events look like peer replies). The enhanced code is parsed from
/// the start of `text` when present, else synthesised as described above.
Reply make_reply(uint16_t code, std::string_view text);

class ReplyParser {
 public:
  struct Limits {
    size_t max_line = 4096;   // RFC 5321 4.5.3.1.5 says 512; tolerate more
    size_t max_lines = 200;   // EHLO replies have ~20; 2,000-line replies are hostile
    size_t max_text = 8192;   // bytes kept in Reply::text; excess skipped
  };

  ReplyParser() : ReplyParser(Limits{}) {}
  explicit ReplyParser(Limits limits);

  /// See parse.h. On kDone, reply() holds the complete reply until the
  /// next call. On kError, error() describes the problem; `consumed` is 0
  /// and the parser is unusable until reset() (the stream is out of sync).
  ParseResult parse(std::span<const char> in);

  const Reply& reply() const { return reply_; }
  Reply take_reply() { return std::move(reply_); }
  const Error& error() const { return error_; }
  void reset();

 private:
  ParseResult fail(Errc code, std::string message);
  bool take_line(std::string_view line, bool* failed);

  Limits limits_;
  Reply reply_;
  Error error_;
  std::string line_;  // partial line stash, at most max_line + 1 bytes
  size_t lines_ = 0;
  EnhancedCode first_line_enhanced_;
  bool in_reply_ = false;
  bool failed_ = false;
};

}  // namespace ringmail::proto
