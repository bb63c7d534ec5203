// HTTP/1.1 request parser (see http_request.h).
#include "proto/http_request.h"

#include <algorithm>
#include <cstring>

namespace ringmail::proto {
namespace {

// RFC 9110 5.6.2: tchar.
bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
    return true;
  }
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                   [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

/// True when the comma-separated list `v` holds `token` (case-insensitive).
bool list_has(std::string_view v, std::string_view token) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view item = trim_ows(v.substr(0, comma));
    if (iequals(item, token)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    v.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

const std::string* HttpRequest::header(std::string_view lower_name) const {
  for (const HttpHeader& h : headers) {
    if (h.name == lower_name) {
      return &h.value;
    }
  }
  return nullptr;
}

std::string_view HttpRequest::path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

HttpRequestParser::HttpRequestParser(const HttpLimits& limits) : limits_(limits) {}

void HttpRequestParser::reset() {
  state_ = State::kHead;
  req_ = HttpRequest{};
  line_.clear();
  head_bytes_ = 0;
  have_request_line_ = false;
  started_ = false;
  content_length_ = 0;
  error_status_ = 0;
  error_.clear();
}

ParseResult HttpRequestParser::fail(int status, std::string why, size_t consumed) {
  state_ = State::kError;
  error_status_ = status;
  error_ = std::move(why);
  return ParseResult{ParseStatus::kError, consumed};
}

ParseResult HttpRequestParser::feed(std::span<const char> in) {
  if (state_ == State::kDone) {
    return ParseResult{ParseStatus::kDone, 0};
  }
  if (state_ == State::kError) {
    return ParseResult{ParseStatus::kError, 0};
  }
  size_t i = 0;
  while (state_ == State::kHead && i < in.size()) {
    started_ = true;
    const char* from = in.data() + i;
    const void* nl = std::memchr(from, '\n', in.size() - i);
    size_t end = nl == nullptr ? in.size()
                               : static_cast<size_t>(static_cast<const char*>(nl) - in.data()) + 1;
    size_t n = end - i;
    // +2: the CRLF is not part of the limit's line.
    if (!have_request_line_ && line_.size() + n > limits_.max_request_line + 2) {
      return fail(414,
                  "request line longer than " + std::to_string(limits_.max_request_line) + " bytes",
                  0);
    }
    if (head_bytes_ + n > limits_.max_head_bytes) {
      return fail(
          431, "request head larger than " + std::to_string(limits_.max_head_bytes) + " bytes", 0);
    }
    head_bytes_ += n;
    line_.append(from, n);
    i = end;
    if (nl == nullptr) {
      break;
    }
    if (line_.size() < 2 || line_[line_.size() - 2] != '\r') {
      return fail(400, "a line ends in a bare LF (CRLF required)", 0);
    }
    std::string_view line(line_.data(), line_.size() - 2);
    if (line.find('\r') != std::string_view::npos) {
      return fail(400, "bare CR in the request head", 0);
    }
    if (!head_line(line)) {
      return ParseResult{ParseStatus::kError, 0};
    }
    line_.clear();
  }
  if (state_ == State::kBody && i < in.size()) {
    size_t want = static_cast<size_t>(content_length_ - req_.body.size());
    size_t take = std::min(want, in.size() - i);
    req_.body.append(in.data() + i, take);
    i += take;
    if (req_.body.size() == content_length_) {
      state_ = State::kDone;
    }
  }
  return ParseResult{state_ == State::kDone ? ParseStatus::kDone : ParseStatus::kNeedMore, i};
}

bool HttpRequestParser::head_line(std::string_view line) {
  if (!have_request_line_) {
    if (line.empty()) {
      return true;  // RFC 9112 2.2: empty lines before the request line are ignored
    }
    have_request_line_ = true;
    return request_line(line);
  }
  if (line.empty()) {
    return end_of_head();
  }
  return header_line(line);
}

bool HttpRequestParser::request_line(std::string_view line) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    fail(400, "malformed request line (method SP target SP version)", 0);
    return false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) {
    fail(400, "malformed method", 0);
    return false;
  }
  if (target.empty() || target.front() != '/' ||
      !std::all_of(target.begin(), target.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    fail(400, "the target must be an absolute path (origin-form)", 0);
    return false;
  }
  if (version == "HTTP/1.1" || version == "HTTP/1.0") {
    req_.minor_version = version[7] - '0';
  } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && version[5] >= '0' &&
             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9') {
    fail(505, "HTTP version not supported (HTTP/1.1 and HTTP/1.0 are)", 0);
    return false;
  } else {
    fail(400, "malformed HTTP version", 0);
    return false;
  }
  req_.method.assign(method);
  req_.target.assign(target);
  return true;
}

bool HttpRequestParser::header_line(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') {
    fail(400, "obsolete line folding is not accepted", 0);
    return false;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) {
    fail(400, "malformed header field (name: value, no space before the colon)", 0);
    return false;
  }
  std::string_view value = trim_ows(line.substr(colon + 1));
  for (char ch : value) {
    auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      fail(400, "control character in a header field value", 0);
      return false;
    }
  }
  if (req_.headers.size() >= limits_.max_headers) {
    fail(431, "more than " + std::to_string(limits_.max_headers) + " header fields", 0);
    return false;
  }
  HttpHeader h;
  h.name.reserve(colon);
  for (char c : line.substr(0, colon)) {
    h.name.push_back(lower(c));
  }
  h.value.assign(value);
  req_.headers.push_back(std::move(h));
  return true;
}

bool HttpRequestParser::end_of_head() {
  size_t hosts = 0;
  size_t lengths = 0;
  bool chunked_or_other = false;
  const std::string* length = nullptr;
  for (const HttpHeader& h : req_.headers) {
    if (h.name == "host") {
      ++hosts;
    } else if (h.name == "content-length") {
      ++lengths;
      length = &h.value;
    } else if (h.name == "transfer-encoding") {
      chunked_or_other = true;
    } else if (h.name == "connection" && list_has(h.value, "close")) {
      req_.keep_alive = false;
    }
  }
  if (req_.minor_version == 0) {
    req_.keep_alive = false;
  }
  if (req_.minor_version == 1 && hosts != 1) {
    fail(400, hosts == 0 ? "HTTP/1.1 request without Host" : "several Host fields", 0);
    return false;
  }
  if (chunked_or_other) {
    if (lengths > 0) {
      fail(400, "both Transfer-Encoding and Content-Length", 0);
    } else {
      fail(501, "Transfer-Encoding is not supported: send a Content-Length", 0);
    }
    return false;
  }
  if (lengths > 1) {
    fail(400, "several Content-Length fields", 0);
    return false;
  }
  if (lengths == 1) {
    if (length->empty() || length->size() > 19 ||
        !std::all_of(length->begin(), length->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fail(400, "malformed Content-Length", 0);
      return false;
    }
    content_length_ = std::stoull(*length);
    if (content_length_ > limits_.max_body) {
      fail(413,
           "body of " + *length + " bytes is over the limit of " +
               std::to_string(limits_.max_body) + " bytes",
           0);
      return false;
    }
  } else if (req_.method == "POST" || req_.method == "PUT") {
    fail(411, "a Content-Length is required", 0);
    return false;
  }
  req_.body.reserve(static_cast<size_t>(content_length_));
  state_ = content_length_ > 0 ? State::kBody : State::kDone;
  return true;
}

std::string_view http_reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

void append_http_response(std::string& out, int status, std::string_view content_type,
                          std::string_view body, bool keep_alive, std::string_view extra_headers) {
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out += http_reason(status);
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: ";
  out += std::to_string(body.size());
  out += "\r\nCache-Control: no-store\r\n";
  if (!keep_alive) {
    out += "Connection: close\r\n";
  }
  out += extra_headers;
  out += "\r\n";
  out += body;
}

}  // namespace ringmail::proto
