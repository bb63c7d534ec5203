/// http_request.h — a bounded, sans-IO HTTP/1.1 request parser (RFC 9110,
/// RFC 9112) for ringmail's HTTP listener (/metrics, /api/inject/v1).
///
/// Shape (proto/parse.h): feed() takes the bytes the caller has and returns
/// {status, consumed}. kDone: one whole request (head and body) is in
/// request(); the caller handles it, calls reset() and feeds the bytes
/// after `consumed` (pipelined requests). kNeedMore: everything was taken.
/// kError: error() says which HTTP status to answer; the connection must be
/// closed after that answer (the stream cannot be resynchronised).
///
/// What is accepted, and what is refused with which status:
///   - request line `method SP origin-form SP HTTP/1.x CRLF`: method a
///     token, target starting with '/' of visible ASCII; anything else 400,
///     a target longer than the line limit 414, another HTTP version 505;
///   - every line ends in CRLF: a bare LF or a bare CR is refused (400) —
///     a front end that reads lines differently could otherwise see
///     another request boundary (request smuggling);
///   - header fields `name: value`: name a token with no space before the
///     colon, value without CTLs but HTAB; obsolete line folding is refused
///     (400); more than max_headers fields, or a head over max_head_bytes,
///     is 431;
///   - HTTP/1.1 needs exactly one Host field (400, RFC 9112 3.2);
///   - the body is framed by Content-Length only: digits, one field (400
///     for several, for a malformed value, or with Transfer-Encoding),
///     over max_body 413. Any Transfer-Encoding is 501 (chunked is not
///     implemented). A POST or PUT without Content-Length is 411;
///   - keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 closes.
/// Limits are constructor parameters. Memory: at most max_head_bytes of
/// head plus max_body of body per request.
/// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/parse.h"

namespace ringmail::proto {

struct HttpLimits {
  /// Threat: a client that sends an endless request line or head to make
  /// the server buffer it.
  size_t max_request_line = 8192;
  size_t max_head_bytes = 32 * 1024;  // request line and header fields together
  size_t max_headers = 64;
  uint64_t max_body = 1u << 20;
};

struct HttpHeader {
  std::string name;   // lower-cased
  std::string value;  // without surrounding whitespace
};

struct HttpRequest {
  std::string method;
  std::string target;
  int minor_version = 1;  // HTTP/1.<minor>
  std::vector<HttpHeader> headers;
  std::string body;
  bool keep_alive = true;

  /// The first field named `lower_name`, or nullptr.
  const std::string* header(std::string_view lower_name) const;
  /// The path of the target (before '?').
  std::string_view path() const;
};

class HttpRequestParser {
 public:
  explicit HttpRequestParser(const HttpLimits& limits = {});

  ParseResult feed(std::span<const char> in);
  /// After kDone: the request. Valid until reset() or the next feed().
  const HttpRequest& request() const { return req_; }
  HttpRequest& request() { return req_; }
  /// After kError: the status to answer (400, 411, 413, 414, 431, 501, 505)
  /// and why, for the response body.
  int error_status() const { return error_status_; }
  const std::string& error() const { return error_; }
  /// Ready for the next request on the same connection.
  void reset();
  /// True once any byte of the current request has been taken.
  bool started() const { return started_; }
  /// True while the head is complete and body bytes are being read.
  bool in_body() const { return state_ == State::kBody; }
  /// After the head: the announced body length.
  uint64_t content_length() const { return content_length_; }

 private:
  enum class State : uint8_t { kHead, kBody, kDone, kError };

  ParseResult fail(int status, std::string why, size_t consumed);
  /// Parses one complete line (without its CRLF); false on error.
  bool head_line(std::string_view line);
  bool request_line(std::string_view line);
  bool header_line(std::string_view line);
  /// The head ended (empty line): checks framing; false on error.
  bool end_of_head();

  HttpLimits limits_;
  State state_ = State::kHead;
  HttpRequest req_;
  std::string line_;  // the partial line
  size_t head_bytes_ = 0;
  bool have_request_line_ = false;
  bool started_ = false;
  uint64_t content_length_ = 0;
  int error_status_ = 0;
  std::string error_;
};

/// The reason phrase of a status code ringmail sends ("OK", "Bad Request").
std::string_view http_reason(int status);

/// Appends a response head (status line, Content-Type, Content-Length,
/// Connection, then `extra_headers`, each ending in CRLF) and the body.
void append_http_response(std::string& out, int status, std::string_view content_type,
                          std::string_view body, bool keep_alive,
                          std::string_view extra_headers = {});

}  // namespace ringmail::proto
