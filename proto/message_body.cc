#include "proto/message_body.h"

#include <cstring>

namespace ringmail::proto {

namespace {

constexpr size_t kMaxLineOctets = 998;  // RFC 5322 2.1.1, without the CRLF

bool has_high_bit(const char* p, size_t n) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc |= w;
  }
  for (; i < n; ++i) {
    acc |= static_cast<unsigned char>(p[i]);
  }
  return (acc & 0x8080808080808080ull) != 0;
}

// One pass shared by normalize_body (kWrite) and scan_body. Line ends are
// found with memchr and runs of ordinary bytes are copied in bulk: this runs
// once per message, on every byte of it, so it is written for speed; the
// byte-by-byte rules it implements are:
//   CRLF          a line end, kept;
//   bare CR or LF a line end, written as CRLF (had_bare_line_end);
//   '.' first     the line needs dot-stuffing for DATA;
//   byte >= 0x80  eight_bit.
template <bool kWrite>
BodyInfo process_body(std::string_view raw, std::string* out) {
  BodyInfo info;
  if (kWrite) {
    out->reserve(out->size() + raw.size() + 2);
  }
  const char* p = raw.data();
  const size_t n = raw.size();
  size_t run_start = 0;  // first byte not yet copied to *out
  size_t line_len = 0;
  auto end_line = [&] {
    ++info.lines;
    if (line_len > kMaxLineOctets) {
      ++info.long_lines;
    }
    line_len = 0;
  };
  size_t i = 0;
  while (i < n) {
    const void* lfp = std::memchr(p + i, '\n', n - i);
    size_t lf = lfp != nullptr ? static_cast<size_t>(static_cast<const char*>(lfp) - p) : n;
    const void* crp = std::memchr(p + i, '\r', lf - i);
    size_t e = crp != nullptr ? static_cast<size_t>(static_cast<const char*>(crp) - p) : lf;
    if (e > i) {
      if (line_len == 0 && p[i] == '.') {
        info.needs_stuffing = true;
      }
      if (!info.eight_bit) {
        info.eight_bit = has_high_bit(p + i, e - i);
      }
      line_len += e - i;
    }
    if (e == n) {
      break;
    }
    if (p[e] == '\r' && e + 1 < n && p[e + 1] == '\n') {
      end_line();  // a proper CRLF: copied as part of the run
      i = e + 2;
      continue;
    }
    if (kWrite) {
      out->append(p + run_start, e - run_start);
      out->append("\r\n");
    }
    run_start = e + 1;
    info.had_bare_line_end = true;
    end_line();
    i = e + 1;
  }
  if (kWrite) {
    out->append(p + run_start, n - run_start);
  }
  if (line_len > 0) {
    if (kWrite) {
      out->append("\r\n");
    }
    end_line();
  }
  return info;
}

// DataReader states (see the transition notes in DataReader::feed).
enum DataState : uint8_t {
  kLineStart,  // after CRLF, or at the start of DATA
  kDot,        // a '.' at the start of a line
  kDotCr,      // ".\r" at the start of a line: LF here ends DATA
  kMid,        // inside a line (also after a bare CR or LF)
  kCr,         // a CR inside or at the end of a line
  kFinished,   // the terminator was seen
};

}  // namespace

BodyInfo normalize_body(std::string_view raw, std::string& out) {
  return process_body<true>(raw, &out);
}

BodyInfo scan_body(std::string_view raw) {
  return process_body<false>(raw, nullptr);
}

size_t append_dot_stuffed(std::string_view normalized, std::string& out) {
  size_t before = out.size();
  out.reserve(out.size() + normalized.size() + 16);
  size_t pos = 0;
  if (!normalized.empty() && normalized.front() == '.') {
    out.push_back('.');
  }
  while (pos < normalized.size()) {
    const void* lf = std::memchr(normalized.data() + pos, '\n', normalized.size() - pos);
    if (lf == nullptr) {
      out.append(normalized.data() + pos, normalized.size() - pos);
      break;
    }
    size_t end = static_cast<size_t>(static_cast<const char*>(lf) - normalized.data()) + 1;
    out.append(normalized.data() + pos, end - pos);
    if (end < normalized.size() && normalized[end] == '.') {
      out.push_back('.');
    }
    pos = end;
  }
  return out.size() - before;
}

std::string dot_unstuff(std::string_view stuffed) {
  std::string out;
  out.reserve(stuffed.size());
  bool line_start = true;
  for (char c : stuffed) {
    if (line_start && c == '.') {
      line_start = false;
      continue;
    }
    out.push_back(c);
    line_start = c == '\n';
  }
  return out;
}

DataReader::DataReader(Limits limits) : limits_(limits) {}

void DataReader::reset() {
  size_ = 0;
  bare_line_seen_ = false;
  state_ = kLineStart;
}

void DataReader::emit(const char* p, size_t n, std::string* sink) {
  uint64_t before = size_;
  size_ += n;
  if (sink == nullptr || before >= limits_.max_message) {
    return;
  }
  if (bare_line_seen_ && limits_.bare_line == BareLinePolicy::kReject) {
    return;  // the message will be refused; stop buffering it
  }
  uint64_t room = limits_.max_message - before;
  sink->append(p, n < room ? n : static_cast<size_t>(room));
}

void DataReader::bare(std::string* sink) {
  bare_line_seen_ = true;
  emit("\r\n", 2, sink);
}

// Only <CRLF>.<CRLF> ends DATA. A bare CR or LF never starts a line, so
// none of the smtpsmug endings (\n.\n, \r.\r, \n.\r\n, \r\n.\n, ...) can
// end the message; each bare CR or LF is reported and stored as CRLF.
ParseResult DataReader::feed(std::span<const char> in, std::string* sink) {
  if (state_ == kFinished) {
    return ParseResult{ParseStatus::kDone, 0};
  }
  const char* p = in.data();
  const char* end = p + in.size();
  while (p < end) {
    if (state_ == kMid) {
      const char* run = p;
      while (p < end && *p != '\r' && *p != '\n') {
        ++p;
      }
      emit(run, static_cast<size_t>(p - run), sink);
      if (p == end) {
        break;
      }
    }
    char c = *p++;
    switch (state_) {
      case kLineStart:
        if (c == '.') {
          state_ = kDot;
        } else if (c == '\r') {
          state_ = kCr;
        } else if (c == '\n') {
          bare(sink);
          state_ = kMid;
        } else {
          emit(&c, 1, sink);
          state_ = kMid;
        }
        break;
      case kDot:  // the leading dot is transparency padding and is dropped
        if (c == '\r') {
          state_ = kDotCr;
        } else if (c == '\n') {
          bare(sink);
          state_ = kMid;
        } else {
          emit(&c, 1, sink);
          state_ = kMid;
        }
        break;
      case kDotCr:
        if (c == '\n') {
          state_ = kFinished;
          return ParseResult{ParseStatus::kDone, static_cast<size_t>(p - in.data())};
        }
        bare(sink);  // ".\r" followed by something else: the CR was bare
        if (c == '\r') {
          state_ = kCr;
        } else {
          emit(&c, 1, sink);
          state_ = kMid;
        }
        break;
      case kMid:
        if (c == '\r') {
          state_ = kCr;
        } else {
          bare(sink);  // c is '\n': a bare LF
        }
        break;
      case kCr:
        if (c == '\n') {
          emit("\r\n", 2, sink);
          state_ = kLineStart;
        } else if (c == '\r') {
          bare(sink);  // the previous CR was bare; this one is pending
        } else {
          bare(sink);
          emit(&c, 1, sink);
          state_ = kMid;
        }
        break;
      default:
        break;
    }
  }
  return ParseResult{ParseStatus::kNeedMore, in.size()};
}

}  // namespace ringmail::proto
