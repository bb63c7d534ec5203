#include "proto/template.h"

#include <algorithm>
#include <limits>

namespace ringmail::proto {
namespace {

inline bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

Error at(size_t offset, std::string what) {
  return make_error(Errc::kSyntax, "template offset " + std::to_string(offset) + ": " + what);
}

// Appends `s` dot-stuffed, except its first byte (the renderer decides about
// that one: it depends on what came before the part).
void append_stuffed_inner(std::string_view s, std::string& out) {
  size_t start = 0;
  for (size_t i = 1; i < s.size(); ++i) {
    if (s[i] == '.' && s[i - 1] == '\n' && i >= 2 && s[i - 2] == '\r') {
      out.append(s.substr(start, i - start));
      out.push_back('.');
      start = i;
    }
  }
  out.append(s.substr(start));
}

bool has_inner_line_start_dot(std::string_view s) {
  return s.find("\r\n.") != std::string_view::npos;
}

struct RawPlaceholder {
  std::string_view name;
  size_t offset;
  size_t part;  // index in parts_
};

}  // namespace

bool valid_var_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxVarName &&
         std::all_of(name.begin(), name.end(), name_char);
}

Result<Template> Template::parse(std::string_view text, const TemplateLimits& limits) {
  if (text.size() >= std::numeric_limits<uint32_t>::max()) {
    return make_error(Errc::kLimit, "template is larger than 4 GiB");
  }
  Template t;
  t.text_.assign(text);
  if (text.starts_with("\r\n")) {
    t.body_offset_ = 2;
  } else {
    size_t blank = text.find("\r\n\r\n");
    t.body_offset_ = blank == std::string_view::npos ? text.size() : blank + 4;
  }
  const bool separate_stuffed = has_inner_line_start_dot(text);
  t.stuffed_separate_ = separate_stuffed;
  auto add_static = [&](size_t b, size_t e) {
    if (e <= b) {
      return;
    }
    Part p;
    p.begin = static_cast<uint32_t>(b);
    p.end = static_cast<uint32_t>(e);
    p.in_header = b < t.body_offset_;
    if (separate_stuffed) {
      p.stuffed_begin = static_cast<uint32_t>(t.stuffed_.size());
      append_stuffed_inner(text.substr(b, e - b), t.stuffed_);
      p.stuffed_end = static_cast<uint32_t>(t.stuffed_.size());
    } else {
      p.stuffed_begin = p.begin;
      p.stuffed_end = p.end;
    }
    t.static_size_ += e - b;
    t.parts_.push_back(p);
  };
  std::vector<RawPlaceholder> found;
  size_t static_begin = 0;
  size_t pos = 0;
  while (true) {
    size_t p = text.find("{{", pos);
    if (p == std::string_view::npos) {
      break;
    }
    if (text.compare(p, 4, "{{{{") == 0) {  // the escape: a literal "{{"
      add_static(static_begin, p + 2);
      static_begin = p + 4;
      pos = p + 4;
      continue;
    }
    size_t q = p + 2;
    while (q < text.size() && name_char(text[q]) && q - (p + 2) <= kMaxVarName) {
      ++q;
    }
    std::string_view name = text.substr(p + 2, q - (p + 2));
    if (name.empty()) {
      return at(p,
                "\"{{\" is not followed by a variable name ([A-Za-z0-9_.-]; write \"{{{{\" "
                "for a literal \"{{\")");
    }
    if (name.size() > kMaxVarName) {
      return at(p, "variable name longer than " + std::to_string(kMaxVarName) + " bytes");
    }
    if (text.compare(q, 2, "}}") != 0) {
      return at(p, "placeholder \"{{" + std::string(name) + "\" is not closed by \"}}\"");
    }
    if (p < t.body_offset_) {
      // A header placeholder must sit in a field value: after the field's
      // colon, or on a continuation line. Then no value can turn the line
      // into an empty line, a continuation or another field.
      size_t line = text.rfind("\r\n", p);
      line = line == std::string_view::npos ? 0 : line + 2;
      bool continuation = text[line] == ' ' || text[line] == '\t';
      size_t colon = text.find(':', line);
      if (!continuation && (colon == std::string_view::npos || colon > p)) {
        return at(p, "placeholder \"" + std::string(name) +
                         "\" is in a header field name (only values may be personalised)");
      }
    }
    if (found.size() == limits.max_placeholders) {
      return at(p, "more than " + std::to_string(limits.max_placeholders) + " placeholders");
    }
    add_static(static_begin, p);
    Part v;
    v.begin = static_cast<uint32_t>(p);
    v.end = static_cast<uint32_t>(q + 2);
    v.in_header = p < t.body_offset_;
    found.push_back({name, p, t.parts_.size()});
    t.parts_.push_back(v);
    static_begin = q + 2;
    pos = q + 2;
  }
  add_static(static_begin, text.size());
  for (const RawPlaceholder& r : found) {
    t.names_.emplace_back(r.name);
  }
  std::sort(t.names_.begin(), t.names_.end());
  t.names_.erase(std::unique(t.names_.begin(), t.names_.end()), t.names_.end());
  if (t.names_.size() > limits.max_names) {
    return make_error(Errc::kLimit, "template uses more than " + std::to_string(limits.max_names) +
                                        " distinct variables");
  }
  t.slot_in_header_.assign(t.names_.size(), 0);
  for (const RawPlaceholder& r : found) {
    auto it = std::lower_bound(t.names_.begin(), t.names_.end(), r.name);
    Part& part = t.parts_[r.part];
    part.slot = static_cast<int32_t>(it - t.names_.begin());
    if (part.in_header) {
      t.slot_in_header_[part.slot] = 1;
      t.header_vars_ = true;
    } else {
      t.body_vars_ = true;
    }
  }
  t.stuffed_.shrink_to_fit();
  return t;
}

size_t Template::footprint() const {
  size_t n = sizeof(Template) + text_.capacity() + stuffed_.capacity() +
             parts_.capacity() * sizeof(Part) + slot_in_header_.capacity();
  for (const std::string& s : names_) {
    n += sizeof(std::string) + s.capacity();
  }
  return n;
}

// ---------------------------------------------------------------------------
// Variables

Result<std::vector<Var>> decode_vars(std::string_view in, const VarsLimits& limits) {
  auto bad = [](std::string what) {
    return make_error(Errc::kInvalidArgument, "recipient variables: " + what);
  };
  if (in.size() > limits.max_total) {
    return bad("more than " + std::to_string(limits.max_total) + " bytes");
  }
  std::vector<Var> vars;
  size_t pos = 0;
  while (pos < in.size()) {
    if (vars.size() == limits.max_vars) {
      return bad("more than " + std::to_string(limits.max_vars) + " variables");
    }
    size_t name_len = static_cast<unsigned char>(in[pos]);
    ++pos;
    if (name_len == 0 || name_len > kMaxVarName || in.size() - pos < name_len + 4) {
      return bad("truncated or invalid name length at offset " + std::to_string(pos - 1));
    }
    std::string_view name = in.substr(pos, name_len);
    if (!valid_var_name(name)) {
      return bad("invalid variable name at offset " + std::to_string(pos));
    }
    pos += name_len;
    uint64_t value_len = 0;
    for (int i = 0; i < 4; ++i) {
      value_len = (value_len << 8) | static_cast<unsigned char>(in[pos + i]);
    }
    pos += 4;
    if (value_len > limits.max_value) {
      return bad("value of \"" + std::string(name) + "\" is longer than " +
                 std::to_string(limits.max_value) + " bytes");
    }
    if (in.size() - pos < value_len) {
      return bad("value of \"" + std::string(name) + "\" is truncated");
    }
    vars.push_back({name, in.substr(pos, value_len)});
    pos += value_len;
  }
  std::vector<std::string_view> names;
  names.reserve(vars.size());
  for (const Var& v : vars) {
    names.push_back(v.name);
  }
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  if (dup != names.end()) {
    return bad("variable \"" + std::string(*dup) + "\" given twice");
  }
  return vars;
}

void append_var(std::string& out, std::string_view name, std::string_view value) {
  out.push_back(static_cast<char>(name.size()));
  out.append(name);
  auto n = static_cast<uint32_t>(value.size());
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((n >> shift) & 0xff));
  }
  out.append(value);
}

Result<BoundVars> bind_vars(const Template& t, std::string_view encoded, std::string_view recipient,
                            const VarsLimits& limits) {
  auto who = [&] { return "recipient " + std::string(recipient) + ": "; };
  Result<std::vector<Var>> vars = decode_vars(encoded, limits);
  if (!vars.ok()) {
    return make_error(Errc::kInvalidArgument, who() + vars.error().message);
  }
  const std::vector<std::string>& names = t.names();
  BoundVars bound(names.size());
  std::vector<uint8_t> have(names.size(), 0);
  for (const Var& v : *vars) {
    auto it = std::lower_bound(names.begin(), names.end(), v.name);
    if (it == names.end() || *it != v.name) {
      continue;  // not used by this template
    }
    size_t slot = static_cast<size_t>(it - names.begin());
    bound[slot] = v.value;
    have[slot] = 1;
  }
  for (size_t slot = 0; slot < names.size(); ++slot) {
    if (have[slot] == 0) {
      return make_error(Errc::kInvalidArgument, who() + "missing variable \"" + names[slot] + "\"");
    }
    std::string_view v = bound[slot];
    if (t.slot_in_header(slot)) {
      if (v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
        return make_error(Errc::kInvalidArgument,
                          who() + "variable \"" + names[slot] +
                              "\" is used in the header section; its value may not contain CR, "
                              "LF or NUL");
      }
    } else if (v.find('\0') != std::string_view::npos) {
      return make_error(Errc::kInvalidArgument,
                        who() + "variable \"" + names[slot] + "\" contains NUL");
    }
  }
  return bound;
}

// ---------------------------------------------------------------------------
// Rendering

namespace {

// Emits a body value with line ends normalised to CRLF and, when `stuffed`,
// a '.' before every line that starts with '.'. Returns the bytes emitted.
uint64_t emit_value(std::string_view v, bool stuffed, bool& line_start, RenderSink& sink) {
  uint64_t n = 0;
  size_t i = 0;
  while (i < v.size()) {
    char c = v[i];
    if (c == '\r' || c == '\n') {
      i += (c == '\r' && i + 1 < v.size() && v[i + 1] == '\n') ? 2 : 1;
      sink.copied("\r\n");
      n += 2;
      line_start = true;
      continue;
    }
    size_t j = v.find_first_of("\r\n", i);
    if (j == std::string_view::npos) {
      j = v.size();
    }
    if (stuffed && line_start && c == '.') {
      sink.copied(".");
      ++n;
    }
    sink.copied(v.substr(i, j - i));
    n += j - i;
    line_start = false;
    i = j;
  }
  return n;
}

bool has_eight_bit(std::string_view v) {
  return std::any_of(v.begin(), v.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

class StringSink final : public RenderSink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  void shared(std::string_view b) override { out_->append(b); }
  void copied(std::string_view b) override { out_->append(b); }

 private:
  std::string* out_;
};

}  // namespace

RenderInfo render(const Template& t, const BoundVars& vars, bool stuffed, RenderSink& sink) {
  RenderInfo info;
  bool line_start = true;
  const std::string_view text = t.text();
  const std::string_view stuffed_text = t.stuffed_text();
  for (const Template::Part& p : t.parts()) {
    if (p.slot < 0) {
      if (stuffed && line_start && text[p.begin] == '.') {
        sink.copied(".");
        ++info.size;
      }
      std::string_view bytes =
          stuffed ? stuffed_text.substr(p.stuffed_begin, p.stuffed_end - p.stuffed_begin)
                  : text.substr(p.begin, p.end - p.begin);
      sink.shared(bytes);
      info.size += bytes.size();
      line_start = bytes.ends_with("\r\n");
      continue;
    }
    std::string_view v = vars[static_cast<size_t>(p.slot)];
    info.eight_bit = info.eight_bit || has_eight_bit(v);
    info.size += emit_value(v, stuffed, line_start, sink);
  }
  return info;
}

uint64_t rendered_size(const Template& t, const BoundVars& vars) {
  uint64_t n = t.static_size();
  for (const Template::Part& p : t.parts()) {
    if (p.slot < 0) {
      continue;
    }
    std::string_view v = vars[static_cast<size_t>(p.slot)];
    n += v.size();
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == '\r') {
        if (i + 1 < v.size() && v[i + 1] == '\n') {
          ++i;
        } else {
          ++n;  // bare CR becomes CRLF
        }
      } else if (v[i] == '\n') {
        ++n;  // bare LF becomes CRLF
      }
    }
  }
  return n;
}

std::string render_to_string(const Template& t, const BoundVars& vars, bool stuffed) {
  std::string out;
  out.reserve(t.static_size() + 256);
  StringSink sink(&out);
  render(t, vars, stuffed, sink);
  return out;
}

}  // namespace ringmail::proto
