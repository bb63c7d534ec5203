#include "tools/queue_summary.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <tuple>
#include <utility>

#include "proto/json.h"

namespace ringmail::tools {
namespace {

// --- a small JSON reader, enough for control replies -------------------------

/// Nesting limit. Threat: a reply nested thousands deep would exhaust the
/// stack of a recursive reader; control replies nest three levels.
constexpr int kMaxDepth = 32;

struct Json {
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  bool is_uint = false;  // a non-negative integer that fits in uint64
  uint64_t uint = 0;
  std::string str;
  std::vector<Json> items;        // an array's elements, or an object's values
  std::vector<std::string> keys;  // an object's member names, parallel to `items`

  const Json* get(std::string_view key) const {
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == key) {
        return &items[i];
      }
    }
    return nullptr;
  }
};

class JsonReader {
 public:
  explicit JsonReader(std::string_view text) : text_(text) {}

  /// The whole text is one value (surrounding whitespace allowed).
  Result<Json> document() {
    Json v;
    RM_TRY(value(&v, 0));
    skip_space();
    if (pos_ != text_.size()) {
      return fail("unexpected bytes after the value");
    }
    return v;
  }

 private:
  Error fail(const std::string& what) const {
    return make_error(Errc::kSyntax,
                      "reply is not valid JSON: " + what + " at byte " + std::to_string(pos_));
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }

  Result<void> value(Json* out, int depth) {
    if (depth > kMaxDepth) {
      return fail("nested too deep");
    }
    skip_space();
    if (pos_ >= text_.size()) {
      return fail("missing value");
    }
    char c = text_[pos_];
    if (c == '{') {
      return object(out, depth);
    }
    if (c == '[') {
      return array(out, depth);
    }
    if (c == '"') {
      out->kind = Json::Kind::kString;
      return string(&out->str);
    }
    if (literal("true")) {
      out->kind = Json::Kind::kBool;
      out->boolean = true;
      return ok_result();
    }
    if (literal("false")) {
      out->kind = Json::Kind::kBool;
      return ok_result();
    }
    if (literal("null")) {
      out->kind = Json::Kind::kNull;
      return ok_result();
    }
    return number(out);
  }

  Result<void> object(Json* out, int depth) {
    out->kind = Json::Kind::kObject;
    ++pos_;  // '{'
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '}') {
      ++pos_;
      return ok_result();
    }
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') {
        return fail("expected a member name");
      }
      std::string key;
      RM_TRY(string(&key));
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ':') {
        return fail("expected ':'");
      }
      ++pos_;
      Json v;
      RM_TRY(value(&v, depth + 1));
      out->keys.push_back(std::move(key));
      out->items.push_back(std::move(v));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == '}') {
        ++pos_;
        return ok_result();
      }
      return fail("expected ',' or '}'");
    }
  }

  Result<void> array(Json* out, int depth) {
    out->kind = Json::Kind::kArray;
    ++pos_;  // '['
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == ']') {
      ++pos_;
      return ok_result();
    }
    for (;;) {
      Json v;
      RM_TRY(value(&v, depth + 1));
      out->items.push_back(std::move(v));
      skip_space();
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < text_.size() && text_[pos_] == ']') {
        ++pos_;
        return ok_result();
      }
      return fail("expected ',' or ']'");
    }
  }

  Result<uint32_t> hex4() {
    if (text_.size() - pos_ < 4) {
      return fail("short \\u escape");
    }
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, v, 16);
    if (ec != std::errc() || p != text_.data() + pos_ + 4) {
      return fail("bad \\u escape");
    }
    pos_ += 4;
    return v;
  }

  static void append_utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  Result<void> escape(std::string* out) {
    if (pos_ >= text_.size()) {
      return fail("unterminated string");
    }
    char e = text_[pos_++];
    switch (e) {
      case '"':
      case '\\':
      case '/':
        out->push_back(e);
        return ok_result();
      case 'b':
        out->push_back('\b');
        return ok_result();
      case 'f':
        out->push_back('\f');
        return ok_result();
      case 'n':
        out->push_back('\n');
        return ok_result();
      case 'r':
        out->push_back('\r');
        return ok_result();
      case 't':
        out->push_back('\t');
        return ok_result();
      case 'u':
        break;
      default:
        return fail("bad escape");
    }
    auto hi = hex4();
    RM_TRY(hi);
    uint32_t cp = *hi;
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
      return fail("lone low surrogate");
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (!literal("\\u")) {
        return fail("lone high surrogate");
      }
      auto lo = hex4();
      RM_TRY(lo);
      if (*lo < 0xDC00 || *lo > 0xDFFF) {
        return fail("bad surrogate pair");
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + (*lo - 0xDC00);
    }
    append_utf8(out, cp);
    return ok_result();
  }

  Result<void> string(std::string* out) {
    ++pos_;  // '"'
    for (;;) {
      if (pos_ >= text_.size()) {
        return fail("unterminated string");
      }
      char c = text_[pos_++];
      if (c == '"') {
        return ok_result();
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return fail("control character in a string");
      }
      if (c == '\\') {
        RM_TRY(escape(out));
      } else {
        out->push_back(c);
      }
    }
  }

  Result<void> number(Json* out) {
    size_t start = pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        ++pos_;
      }
      return pos_ - from;
    };
    bool negative = literal("-");
    size_t int_start = pos_;
    size_t n = digits();
    if (n == 0 || (n > 1 && text_[int_start] == '0')) {
      return fail("bad number");
    }
    bool integer = true;
    if (literal(".")) {
      integer = false;
      if (digits() == 0) {
        return fail("bad number");
      }
    }
    if (pos_ < text_.size() && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      integer = false;
      ++pos_;
      if (!literal("+")) {
        (void)literal("-");
      }
      if (digits() == 0) {
        return fail("bad number");
      }
    }
    out->kind = Json::Kind::kNumber;
    if (integer && !negative) {
      auto [p, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, out->uint);
      out->is_uint = ec == std::errc() && p == text_.data() + pos_;
    }
    return ok_result();
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// --- the listing ---------------------------------------------------------------

Error bad_field(std::string_view key, std::string_view want) {
  return make_error(Errc::kSyntax,
                    "list reply: \"" + std::string(key) + "\" must be " + std::string(want));
}

Result<uint64_t> uint_field(const Json& o, std::string_view key) {
  const Json* v = o.get(key);
  if (v == nullptr || !v->is_uint) {
    return bad_field(key, "a non-negative integer");
  }
  return v->uint;
}

/// An optional count: absent (an older daemon) or null mean none.
Result<std::optional<uint64_t>> optional_uint(const Json& o, std::string_view key) {
  const Json* v = o.get(key);
  if (v == nullptr || v->kind == Json::Kind::kNull) {
    return std::optional<uint64_t>();
  }
  if (!v->is_uint) {
    return bad_field(key, "a non-negative integer or null");
  }
  return std::optional<uint64_t>(v->uint);
}

Result<std::string> string_field(const Json& o, std::string_view key, bool required) {
  const Json* v = o.get(key);
  if (v == nullptr && !required) {
    return std::string();
  }
  if (v == nullptr || v->kind != Json::Kind::kString) {
    return bad_field(key, "a string");
  }
  return v->str;
}

Result<bool> bool_field(const Json& o, std::string_view key, bool required) {
  const Json* v = o.get(key);
  if (v == nullptr && !required) {
    return false;
  }
  if (v == nullptr || v->kind != Json::Kind::kBool) {
    return bad_field(key, "true or false");
  }
  return v->boolean;
}

/// `lhs = *expr`, or return its error.
#define QS_ASSIGN(lhs, expr)                     \
  do {                                           \
    auto qs_result_ = (expr);                    \
    if (!qs_result_.ok()) {                      \
      return std::move(qs_result_).take_error(); \
    }                                            \
    lhs = std::move(*qs_result_);                \
  } while (0)

Result<DestinationRow> read_row(const Json& o) {
  if (o.kind != Json::Kind::kObject) {
    return make_error(Errc::kSyntax, "list reply: a destination is not an object");
  }
  DestinationRow row;
  QS_ASSIGN(row.domain, string_field(o, "domain", true));
  QS_ASSIGN(row.pool, string_field(o, "pool", true));
  QS_ASSIGN(row.shard, uint_field(o, "shard"));
  QS_ASSIGN(row.queued, uint_field(o, "queued"));
  QS_ASSIGN(row.in_flight, uint_field(o, "in_flight"));
  QS_ASSIGN(row.deferred, uint_field(o, "deferred"));
  QS_ASSIGN(row.connections, uint_field(o, "connections"));
  QS_ASSIGN(row.paused, bool_field(o, "paused", true));
  QS_ASSIGN(row.oldest_ms, optional_uint(o, "oldest_ms"));
  QS_ASSIGN(row.next_retry_ms, optional_uint(o, "next_retry_ms"));
  QS_ASSIGN(row.last_error, string_field(o, "last_error", false));
  QS_ASSIGN(row.last_error_age_ms, optional_uint(o, "last_error_age_ms"));
  const Json* sources = o.get("sources");
  if (sources == nullptr || sources->kind != Json::Kind::kArray) {
    return bad_field("sources", "an array");
  }
  row.held = !sources->items.empty();
  for (const Json& s : sources->items) {
    if (s.kind != Json::Kind::kObject) {
      return bad_field("sources", "an array of objects");
    }
    uint64_t limit = 0, backoff = 0;
    bool hold = false;
    QS_ASSIGN(limit, uint_field(s, "max_connections"));
    QS_ASSIGN(backoff, uint_field(s, "backoff_ms"));
    QS_ASSIGN(hold, bool_field(s, "hold", false));
    row.max_connections += limit;
    row.backoff_ms = std::max(row.backoff_ms, backoff);
    row.held = row.held && hold && backoff > 0;
  }
  return row;
}

/// Shown rows, the most mail first; `hidden` gets how many were left out.
std::vector<DestinationRow> select(std::vector<DestinationRow> rows, bool all, size_t* hidden) {
  size_t before = rows.size();
  if (!all) {
    std::erase_if(rows, [](const DestinationRow& r) { return !r.active(); });
  }
  *hidden = before - rows.size();
  std::sort(rows.begin(), rows.end(), [](const DestinationRow& a, const DestinationRow& b) {
    if (a.mail() != b.mail()) {
      return a.mail() > b.mail();
    }
    return std::tie(a.domain, a.pool) < std::tie(b.domain, b.pool);
  });
  return rows;
}

struct Totals {
  uint64_t queued = 0, in_flight = 0, deferred = 0;
  std::optional<uint64_t> oldest_ms;
};

Totals totals_of(const std::vector<DestinationRow>& rows) {
  Totals t;
  for (const auto& r : rows) {
    t.queued += r.queued;
    t.in_flight += r.in_flight;
    t.deferred += r.deferred;
    if (r.oldest_ms && (!t.oldest_ms || *r.oldest_ms > *t.oldest_ms)) {
      t.oldest_ms = r.oldest_ms;
    }
  }
  return t;
}

std::string pad_right(std::string s, size_t width) {
  if (s.size() < width) {
    s.append(width - s.size(), ' ');
  }
  return s;
}

std::string pad_left(const std::string& s, size_t width) {
  return s.size() < width ? std::string(width - s.size(), ' ') + s : s;
}

std::string state_of(const DestinationRow& r) {
  std::string state;
  if (r.paused) {
    state = "paused";
  }
  if (r.backoff_ms > 0) {
    state += state.empty() ? "" : ", ";
    state += "backoff " + short_duration(r.backoff_ms) + (r.held ? ", held" : "");
  }
  if (state.empty()) {
    state = r.connections > 0 && r.mail() > 0 ? "delivering" : "-";
  }
  return state;
}

/// "  (deferred 1s ago: 451 4.4.1 ...; retry in 58s)", or "" when there is
/// nothing to say.
std::string deferral_line(const DestinationRow& r) {
  if (r.deferred == 0 && r.backoff_ms == 0) {
    return "";
  }
  std::string what;
  if (!r.last_error.empty()) {
    what = "deferred ";
    if (r.last_error_age_ms) {
      what += short_duration(*r.last_error_age_ms) + " ago";
    }
    what += ": " + r.last_error;
  }
  if (r.deferred > 0 && r.next_retry_ms) {
    what += what.empty() ? "" : "; ";
    what += "retry in " + short_duration(*r.next_retry_ms);
  }
  return what.empty() ? "" : "  (" + what + ")";
}

void append_optional(std::string& out, std::optional<uint64_t> v) {
  if (v) {
    proto::append_json_uint(out, *v);
  } else {
    out.append("null");
  }
}

}  // namespace

Result<std::vector<DestinationRow>> parse_listing(std::string_view json) {
  auto doc = JsonReader(json).document();
  RM_TRY(doc);
  if (doc->kind != Json::Kind::kObject) {
    return make_error(Errc::kSyntax, "list reply: not an object");
  }
  const Json* ok = doc->get("ok");
  if (ok == nullptr || ok->kind != Json::Kind::kBool || !ok->boolean) {
    const Json* error = doc->get("error");
    return make_error(Errc::kInvalidArgument, error != nullptr && error->kind == Json::Kind::kString
                                                  ? error->str
                                                  : std::string("list reply: not ok"));
  }
  const Json* dests = doc->get("destinations");
  if (dests == nullptr || dests->kind != Json::Kind::kArray) {
    return bad_field("destinations", "an array");
  }
  std::vector<DestinationRow> rows;
  for (const Json& d : dests->items) {
    auto row = read_row(d);
    RM_TRY(row);
    rows.push_back(std::move(*row));
  }
  return rows;
}

std::string short_duration(uint64_t ms) {
  const uint64_t s = ms / 1000;
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llus", static_cast<unsigned long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llud%02lluh", static_cast<unsigned long long>(s / 86400),
                  static_cast<unsigned long long>(s % 86400 / 3600));
  }
  return buf;
}

std::string format_queue(std::vector<DestinationRow> rows, bool all) {
  size_t hidden = 0;
  rows = select(std::move(rows), all, &hidden);
  if (rows.empty()) {
    return "Mail queue is empty\n";
  }
  auto num = [](uint64_t v) { return std::to_string(v); };
  auto conns = [&num](const DestinationRow& r) {
    return num(r.connections) + "/" + num(r.max_connections);
  };
  size_t dw = std::string_view("Destination").size();
  size_t pw = std::string_view("Pool").size();
  size_t cw = std::string_view("Conns").size();
  for (const auto& r : rows) {
    dw = std::max(dw, r.domain.size());
    pw = std::max(pw, r.pool.size());
    cw = std::max(cw, conns(r).size());
  }
  std::string out = pad_right("Destination", dw) + "  " + pad_right("Pool", pw) +
                    "  Queued  In-flight  Deferred  Oldest  " + pad_right("Conns", cw) +
                    "  State\n";
  for (const auto& r : rows) {
    out += pad_right(r.domain, dw) + "  " + pad_right(r.pool, pw) + "  " +
           pad_left(num(r.queued), 6) + "  " + pad_left(num(r.in_flight), 9) + "  " +
           pad_left(num(r.deferred), 8) + "  " +
           pad_left(r.oldest_ms ? short_duration(*r.oldest_ms) : "-", 6) + "  " +
           pad_right(conns(r), cw) + "  " + state_of(r) + "\n";
    std::string why = deferral_line(r);
    if (!why.empty()) {
      out += why + "\n";
    }
  }
  Totals t = totals_of(rows);
  out += "-- " + num(rows.size()) + (rows.size() == 1 ? " destination: " : " destinations: ") +
         num(t.queued) + " queued, " + num(t.in_flight) + " in flight, " + num(t.deferred) +
         " deferred";
  if (t.oldest_ms) {
    out += "; oldest " + short_duration(*t.oldest_ms);
  }
  if (hidden > 0) {
    out += " (" + num(hidden) + (hidden == 1 ? " idle destination" : " idle destinations") +
           " not shown)";
  }
  out += "\n";
  return out;
}

std::string format_queue_json(std::vector<DestinationRow> rows, bool all) {
  using proto::append_json_key;
  using proto::append_json_string;
  using proto::append_json_uint;
  size_t hidden = 0;
  rows = select(std::move(rows), all, &hidden);
  std::string out = "{\"destinations\":[";
  for (size_t i = 0; i < rows.size(); ++i) {
    const DestinationRow& r = rows[i];
    out += i == 0 ? "{" : ",{";
    append_json_key(out, "domain");
    append_json_string(out, r.domain);
    out += ",";
    append_json_key(out, "pool");
    append_json_string(out, r.pool);
    for (const auto& [key, v] : {std::pair<const char*, uint64_t>{"shard", r.shard},
                                 {"queued", r.queued},
                                 {"in_flight", r.in_flight},
                                 {"deferred", r.deferred},
                                 {"connections", r.connections},
                                 {"max_connections", r.max_connections},
                                 {"backoff_ms", r.backoff_ms}}) {
      out += ",";
      append_json_key(out, key);
      append_json_uint(out, v);
    }
    out += ",";
    append_json_key(out, "paused");
    out += r.paused ? "true" : "false";
    out += ",";
    append_json_key(out, "held");
    out += r.held ? "true" : "false";
    out += ",";
    append_json_key(out, "oldest_ms");
    append_optional(out, r.oldest_ms);
    out += ",";
    append_json_key(out, "next_retry_ms");
    append_optional(out, r.next_retry_ms);
    out += ",";
    append_json_key(out, "last_error");
    append_json_string(out, r.last_error);
    out += ",";
    append_json_key(out, "last_error_age_ms");
    append_optional(out, r.last_error_age_ms);
    out += "}";
  }
  Totals t = totals_of(rows);
  out += "],\"totals\":{";
  append_json_key(out, "destinations");
  append_json_uint(out, rows.size());
  for (const auto& [key, v] : {std::pair<const char*, uint64_t>{"queued", t.queued},
                               {"in_flight", t.in_flight},
                               {"deferred", t.deferred}}) {
    out += ",";
    append_json_key(out, key);
    append_json_uint(out, v);
  }
  out += ",";
  append_json_key(out, "oldest_ms");
  append_optional(out, t.oldest_ms);
  out += ",";
  append_json_key(out, "hidden");
  append_json_uint(out, hidden);
  out += "}}\n";
  return out;
}

}  // namespace ringmail::tools
