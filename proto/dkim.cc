#include "proto/dkim.h"

#include <algorithm>
#include <cstring>

#include "proto/text_util.h"

namespace ringmail::proto {
namespace {

using internal::ascii_lower;
using internal::iequals;

inline bool is_wsp(char c) {
  return c == ' ' || c == '\t';
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = ascii_lower(c);
  }
  return out;
}

// Output is buffered so that a body made of many short runs does not cost
// one virtual call per run; long runs go straight to the sink.
constexpr size_t kCanonBuffer = 4096;
constexpr size_t kDirectRun = 512;

}  // namespace

std::string_view canon_name(Canon c) {
  return c == Canon::kSimple ? "simple" : "relaxed";
}

Result<CanonPair> parse_canonicalization(std::string_view text) {
  auto one = [](std::string_view s) -> std::optional<Canon> {
    if (s == "simple") {
      return Canon::kSimple;
    }
    if (s == "relaxed") {
      return Canon::kRelaxed;
    }
    return std::nullopt;
  };
  size_t slash = text.find('/');
  std::optional<Canon> h = one(text.substr(0, slash));
  std::optional<Canon> b = slash == std::string_view::npos ? std::optional<Canon>(Canon::kSimple)
                                                           : one(text.substr(slash + 1));
  if (!h || !b) {
    return make_error(
        Errc::kInvalidArgument,
        "canonicalization \"" + std::string(text) +
            "\" is not simple or relaxed, optionally followed by /simple or /relaxed");
  }
  return CanonPair{*h, *b};
}

// ---------------------------------------------------------------------------
// Header section

Result<SplitMessage> split_header(std::string_view message, const HeaderLimits& limits) {
  SplitMessage out;
  size_t pos = 0;
  size_t line_no = 0;
  auto bad = [&](std::string what) {
    return make_error(Errc::kSyntax, "header line " + std::to_string(line_no) + ": " + what);
  };
  while (true) {
    ++line_no;
    if (pos == message.size()) {
      out.body_offset = pos;  // no empty line: the message is all header
      return out;
    }
    if (pos > limits.max_section) {
      return make_error(Errc::kLimit, "header section is larger than " +
                                          std::to_string(limits.max_section) + " bytes");
    }
    if (message.compare(pos, 2, "\r\n") == 0) {
      out.body_offset = pos + 2;
      return out;
    }
    size_t end = message.find("\r\n", pos);
    if (end == std::string_view::npos) {
      return bad("no CRLF at the end of the header section");
    }
    if (is_wsp(message[pos])) {
      if (out.fields.empty()) {
        return bad("continuation line before the first header field");
      }
      HeaderField& f = out.fields.back();
      f.raw = std::string_view(f.raw.data(),
                               end + 2 - static_cast<size_t>(f.raw.data() - message.data()));
    } else {
      size_t colon = message.find(':', pos);
      if (colon == std::string_view::npos || colon > end) {
        return bad("not a header field (no colon)");
      }
      size_t name_end = colon;
      while (name_end > pos && is_wsp(message[name_end - 1])) {
        --name_end;
      }
      std::string_view name = message.substr(pos, name_end - pos);
      if (name.empty()) {
        return bad("empty header field name");
      }
      for (char c : name) {
        auto u = static_cast<unsigned char>(c);
        if (u < 33 || u > 126) {
          return bad("header field name has a byte that is not printable ASCII");
        }
      }
      if (out.fields.size() == limits.max_fields) {
        return make_error(Errc::kLimit,
                          "more than " + std::to_string(limits.max_fields) + " header fields");
      }
      out.fields.push_back({name, message.substr(pos, end + 2 - pos)});
    }
    pos = end + 2;
  }
}

namespace {

// Skips a comment starting at s[i] == '(' (nested, with quoted pairs);
// returns the index after it (s.size() when unterminated).
size_t skip_comment(std::string_view s, size_t i) {
  int depth = 0;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') {
      ++i;
    } else if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth == 0) {
        return i + 1;
      }
    }
  }
  return s.size();
}

// Skips a quoted string starting at s[i] == '"'.
size_t skip_quoted(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return s.size();
}

// The addr-spec of the first mailbox of a mailbox-list (RFC 5322 3.4),
// without comments and folding: "local@domain", or empty when there is none.
std::string first_addr_spec(std::string_view value) {
  // The first element of the list ends at a ',' outside quotes, comments and
  // angle brackets; inside it an angle-addr wins over a bare addr-spec.
  size_t lt = std::string_view::npos;
  size_t end = value.size();
  for (size_t i = 0; i < value.size();) {
    char c = value[i];
    if (c == '"') {
      i = skip_quoted(value, i);
    } else if (c == '(') {
      i = skip_comment(value, i);
    } else if (c == '<') {
      lt = i;
      size_t gt = value.find('>', i);
      end = gt == std::string_view::npos ? value.size() : gt;
      break;
    } else if (c == ',') {
      end = i;
      break;
    } else {
      ++i;
    }
  }
  std::string_view part =
      lt == std::string_view::npos ? value.substr(0, end) : value.substr(lt + 1, end - lt - 1);
  std::string addr;
  for (size_t i = 0; i < part.size();) {
    char c = part[i];
    if (c == '(') {
      i = skip_comment(part, i);
    } else if (c == '"') {
      size_t j = skip_quoted(part, i);
      addr.append(part.substr(i, j - i));
      i = j;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      ++i;
    } else {
      addr.push_back(c);
      ++i;
    }
  }
  return addr;
}

}  // namespace

Result<std::string> from_domain(const SplitMessage& msg) {
  const HeaderField* from = nullptr;
  for (const HeaderField& f : msg.fields) {
    if (iequals(f.name, "From")) {
      if (from != nullptr) {
        return make_error(Errc::kInvalidArgument, "message has more than one From field");
      }
      from = &f;
    }
  }
  if (from == nullptr) {
    return make_error(Errc::kInvalidArgument, "message has no From field");
  }
  std::string_view value = from->raw.substr(from->raw.find(':') + 1);
  std::string addr = first_addr_spec(value);
  // The domain follows the last '@' outside a quoted local part.
  size_t at = std::string::npos;
  for (size_t i = 0; i < addr.size(); ++i) {
    if (addr[i] == '"') {
      i = skip_quoted(addr, i) - 1;
    } else if (addr[i] == '@') {
      at = i;
    }
  }
  if (at == std::string::npos || at + 1 == addr.size()) {
    return make_error(Errc::kInvalidArgument, "no address with a domain in the From field");
  }
  std::string domain = lower(std::string_view(addr).substr(at + 1));
  while (!domain.empty() && domain.back() == '.') {
    domain.pop_back();
  }
  if (domain.empty()) {
    return make_error(Errc::kInvalidArgument, "no address with a domain in the From field");
  }
  return domain;
}

void append_canonical_header(Canon c, std::string_view raw, std::string& out) {
  if (c == Canon::kSimple) {
    out.append(raw);
    return;
  }
  size_t colon = raw.find(':');
  if (colon == std::string_view::npos) {
    colon = raw.size();  // not a field (callers never pass one); canonicalise as a name
  }
  size_t name_end = colon;
  while (name_end > 0 && is_wsp(raw[name_end - 1])) {
    --name_end;
  }
  for (size_t i = 0; i < name_end; ++i) {
    out.push_back(ascii_lower(raw[i]));
  }
  out.push_back(':');
  std::string_view value = colon < raw.size() ? raw.substr(colon + 1) : std::string_view();
  if (value.ends_with("\r\n")) {
    value.remove_suffix(2);
  }
  bool space = false;
  bool started = false;
  for (size_t i = 0; i < value.size(); ++i) {
    char ch = value[i];
    if (ch == '\r' && i + 1 < value.size() && value[i + 1] == '\n') {
      ++i;  // unfold: the CRLF goes, the WSP after it counts as a run
      continue;
    }
    if (is_wsp(ch)) {
      space = true;
      continue;
    }
    if (space && started) {
      out.push_back(' ');
    }
    space = false;
    started = true;
    out.push_back(ch);
  }
  out.append("\r\n");
}

// ---------------------------------------------------------------------------
// Body

BodyCanonicalizer::BodyCanonicalizer(Canon c, Sha256* sink) : canon_(c), sink_(sink) {
  buf_.reserve(kCanonBuffer);
}

void BodyCanonicalizer::flush() {
  if (!buf_.empty()) {
    sink_->update(buf_);
    buf_.clear();
  }
}

void BodyCanonicalizer::emit(std::string_view bytes) {
  length_ += bytes.size();
  if (bytes.size() >= kDirectRun) {
    flush();
    sink_->update(bytes);
    return;
  }
  buf_.append(bytes);
  if (buf_.size() >= kCanonBuffer) {
    flush();
  }
}

void BodyCanonicalizer::emit_content(std::string_view bytes) {
  for (; crlfs_ > 0; --crlfs_) {
    emit("\r\n");
  }
  if (wsp_) {
    emit(" ");
    wsp_ = false;
  }
  emit(bytes);
  any_ = true;
}

void BodyCanonicalizer::update(std::string_view b) {
  const bool relaxed = canon_ == Canon::kRelaxed;
  size_t i = 0;
  while (i < b.size()) {
    if (cr_) {
      cr_ = false;
      if (b[i] == '\n') {
        ++crlfs_;
        wsp_ = false;  // WSP at the end of a line is ignored (relaxed)
        ++i;
        continue;
      }
      emit_content("\r");  // a bare CR is content
    }
    char c = b[i];
    if (c == '\r') {
      cr_ = true;
      ++i;
      continue;
    }
    if (relaxed && is_wsp(c)) {
      wsp_ = true;
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (relaxed) {
      while (j < b.size() && b[j] != '\r' && !is_wsp(b[j])) {
        ++j;
      }
    } else {
      const void* cr = std::memchr(b.data() + j, '\r', b.size() - j);
      j = cr == nullptr ? b.size() : static_cast<size_t>(static_cast<const char*>(cr) - b.data());
    }
    emit_content(b.substr(i, j - i));
    i = j;
  }
}

void BodyCanonicalizer::finish() {
  if (cr_) {
    cr_ = false;
    emit_content("\r");
  }
  wsp_ = false;  // WSP ending an unterminated last line goes too (see the header)
  crlfs_ = 0;    // trailing empty lines are ignored
  if (any_ || canon_ == Canon::kSimple) {
    emit("\r\n");  // the last line's CRLF (added when missing); simple: an empty body is CRLF
  }
  flush();
}

// ---------------------------------------------------------------------------
// Signed header fields

SignedHeaders select_signed_headers(const SplitMessage& msg, std::span<const std::string> names,
                                    std::span<const std::string> oversign, Canon c) {
  SignedHeaders out;
  std::vector<std::string_view> done;
  auto add_name = [&](std::string_view name) {
    if (!out.h.empty()) {
      out.h.push_back(':');
    }
    out.h.append(name);
  };
  for (const std::string& name : names) {
    if (std::any_of(done.begin(), done.end(),
                    [&](std::string_view d) { return iequals(d, name); })) {
      continue;
    }
    done.push_back(name);
    for (size_t i = msg.fields.size(); i-- > 0;) {
      if (iequals(msg.fields[i].name, name)) {
        add_name(name);
        append_canonical_header(c, msg.fields[i].raw, out.canonical);
      }
    }
    if (std::any_of(oversign.begin(), oversign.end(),
                    [&](const std::string& o) { return iequals(o, name); })) {
      add_name(name);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The DKIM-Signature field

SignatureHeader::SignatureHeader(const SignatureParams& p) {
  text_ = "DKIM-Signature:";
  column_ = text_.size();
  add_tag("v", "1", 0);
  add_tag("a", p.algorithm, 0);
  std::string c =
      std::string(canon_name(p.canon.header)) + "/" + std::string(canon_name(p.canon.body));
  add_tag("c", c, 0);
  add_tag("d", p.domain, 0);
  add_tag("s", p.selector, 0);
  if (p.timestamp >= 0) {
    add_tag("t", std::to_string(p.timestamp), 0);
  }
  if (p.expiration >= 0) {
    add_tag("x", std::to_string(p.expiration), 0);
  }
  if (p.body_length) {
    add_tag("l", std::to_string(*p.body_length), 0);
  }
  add_tag("h", p.headers, ':');
  add_tag("bh", p.body_hash, '*');
  // "b=" with room for at least one character of the signature after it.
  if (column_ + 4 > kFoldColumn) {
    text_.append("\r\n\t");
    column_ = 1;
  } else {
    text_.push_back(' ');
    ++column_;
  }
  text_.append("b=");
  column_ += 2;
}

// Appends " tag=value;" folding with CRLF TAB where the value allows it:
// split_at 0: never inside; ':' after each colon (h=); '*' anywhere (base64).
void SignatureHeader::add_tag(std::string_view tag, std::string_view value, char split_at) {
  std::string token(tag);
  token.push_back('=');
  token.append(value);
  token.push_back(';');
  auto fold = [&] {
    text_.append("\r\n\t");
    column_ = 1;
  };
  if (column_ + 1 + token.size() <= kFoldColumn) {
    text_.push_back(' ');
    text_.append(token);
    column_ += 1 + token.size();
    return;
  }
  // Atoms: the pieces between allowed break points.
  std::vector<std::string_view> atoms;
  std::string_view t = token;
  if (split_at == 0) {
    atoms.push_back(t);
  } else if (split_at == ':') {
    size_t start = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i] == ':') {
        atoms.push_back(t.substr(start, i + 1 - start));
        start = i + 1;
      }
    }
    atoms.push_back(t.substr(start));
  } else {
    size_t first = tag.size() + 2;  // "tag=" and one character stay together
    atoms.push_back(t.substr(0, std::min(first, t.size())));
    for (size_t i = first; i < t.size(); ++i) {
      atoms.push_back(t.substr(i, 1));
    }
  }
  if (column_ + 1 + atoms.front().size() > kFoldColumn) {
    fold();
  } else {
    text_.push_back(' ');
    ++column_;
  }
  for (size_t i = 0; i < atoms.size(); ++i) {
    if (i > 0 && column_ + atoms[i].size() > kFoldColumn) {
      fold();
    }
    text_.append(atoms[i]);
    column_ += atoms[i].size();
  }
}

std::string SignatureHeader::canonical_unsigned(Canon c) const {
  std::string field = text_ + "\r\n";
  std::string out;
  append_canonical_header(c, field, out);
  out.resize(out.size() - 2);
  return out;
}

std::string SignatureHeader::finish(std::string_view signature_b64) const {
  std::string out = text_;
  out.reserve(text_.size() + signature_b64.size() + signature_b64.size() / 60 * 3 + 8);
  size_t col = column_;
  for (char ch : signature_b64) {
    if (col + 1 > kFoldColumn) {
      out.append("\r\n\t");
      col = 1;
    }
    out.push_back(ch);
    ++col;
  }
  out.append("\r\n");
  return out;
}

// ---------------------------------------------------------------------------
// Base64

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+') {
    return 62;
  }
  if (c == '/') {
    return 63;
  }
  return -1;
}
}  // namespace

void append_base64(std::string& out, std::span<const uint8_t> in) {
  out.reserve(out.size() + (in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8) | in[i + 2];
    out.push_back(kB64[v >> 18]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back(kB64[v & 63]);
  }
  size_t rest = in.size() - i;
  if (rest == 1) {
    uint32_t v = uint32_t{in[i]} << 16;
    out.push_back(kB64[v >> 18]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.append("==");
  } else if (rest == 2) {
    uint32_t v = (uint32_t{in[i]} << 16) | (uint32_t{in[i + 1]} << 8);
    out.push_back(kB64[v >> 18]);
    out.push_back(kB64[(v >> 12) & 63]);
    out.push_back(kB64[(v >> 6) & 63]);
    out.push_back('=');
  }
}

std::string base64(std::span<const uint8_t> bytes) {
  std::string out;
  append_base64(out, bytes);
  return out;
}

Result<std::string> base64_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t digits = 0;
  size_t pad = 0;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      continue;
    }
    if (c == '=') {
      ++pad;
      continue;
    }
    int v = b64_value(c);
    if (v < 0 || pad > 0) {
      return make_error(Errc::kSyntax, "invalid base64");
    }
    ++digits;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  if ((digits + pad) % 4 != 0 || pad > 2 || digits % 4 == 1 ||
      (pad > 0 && (digits + pad) % 4 != 0)) {
    return make_error(Errc::kSyntax, "invalid base64 length or padding");
  }
  if (pad > 0 && (4 - digits % 4) % 4 != pad) {
    return make_error(Errc::kSyntax, "invalid base64 padding");
  }
  return out;
}

}  // namespace ringmail::proto
