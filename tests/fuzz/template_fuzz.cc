// Personalisation templates (proto/template.h) on arbitrary bytes.
// Input: 1 byte k (values), k values (length-prefixed, up to 64 bytes),
// then the template text (normalised first, as the engine does).
// Properties:
//   - parse() never crashes; when it fails, the message names an offset;
//   - every variable bound: the DATA rendering equals dot-stuffing the BDAT
//     rendering (stuffing across value/static boundaries is right), the
//     BDAT rendering is normalised, rendered_size() is its size, shared
//     pieces point into the template;
//   - a missing variable is an error naming it;
//   - a template without placeholders renders as its text (escapes aside);
//   - decode_vars(append_var(...)) round-trips; decode_vars on the raw
//     input never crashes.
#include <string>
#include <vector>

#include "proto/message_body.h"
#include "proto/template.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

namespace {

class CheckingSink final : public RenderSink {
 public:
  explicit CheckingSink(const Template& t) : t_(t) {}
  void shared(std::string_view b) override {
    auto inside = [&](std::string_view whole) {
      return b.data() >= whole.data() && b.data() + b.size() <= whole.data() + whole.size();
    };
    FUZZ_CHECK(inside(t_.text()) || inside(t_.stuffed_text()));
    out.append(b);
  }
  void copied(std::string_view b) override { out.append(b); }
  const Template& t_;
  std::string out;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ringmail::fuzz::FuzzInput in(data, size);
  (void)decode_vars(std::string(in.rest()));
  size_t k = in.byte() % 8;
  std::vector<std::string> values;
  for (size_t i = 0; i < k; ++i) {
    values.emplace_back(in.slice(64));
  }
  std::string raw(in.rest());
  std::string text;
  normalize_body(raw, text);
  auto t = Template::parse(text);
  if (!t.ok()) {
    FUZZ_CHECK(t.error().message.find("offset") != std::string::npos ||
               t.error().message.find("distinct") != std::string::npos);
    return 0;
  }
  if (!t->has_vars()) {
    std::string plain = render_to_string(*t, {}, false);
    std::string unescaped;  // "{{{{" -> "{{", left to right
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, 4, "{{{{") == 0) {
        unescaped += "{{";
        i += 4;
      } else {
        unescaped.push_back(text[i++]);
      }
    }
    FUZZ_CHECK(plain == unescaped);
  }
  // Bind every name to one of the values (header slots get CR/LF removed).
  std::string enc;
  const auto& names = t->names();
  for (size_t i = 0; i < names.size(); ++i) {
    std::string v = values.empty() ? std::string() : values[i % values.size()];
    if (t->slot_in_header(i)) {
      std::erase_if(v, [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
    } else {
      std::erase(v, '\0');
    }
    append_var(enc, names[i], v);
  }
  auto decoded = decode_vars(enc);
  FUZZ_CHECK(decoded.ok() && decoded->size() == names.size());
  auto b = bind_vars(*t, enc, "r@example.com");
  FUZZ_CHECK(b.ok());
  CheckingSink plain_sink(*t);
  RenderInfo info = render(*t, *b, false, plain_sink);
  const std::string& plain = plain_sink.out;
  FUZZ_CHECK(info.size == plain.size());
  FUZZ_CHECK(rendered_size(*t, *b) == plain.size());
  if (plain.empty() || plain.ends_with("\r\n")) {
    std::string again;
    normalize_body(plain, again);
    FUZZ_CHECK(again == plain);
  }
  CheckingSink stuffed_sink(*t);
  RenderInfo sinfo = render(*t, *b, true, stuffed_sink);
  std::string want;
  append_dot_stuffed(plain, want);
  FUZZ_CHECK(stuffed_sink.out == want);
  FUZZ_CHECK(sinfo.size == want.size());
  // Dropping one variable is an error that names it.
  if (!names.empty()) {
    std::string partial;
    for (size_t i = 1; i < names.size(); ++i) {
      append_var(partial, names[i], "x");
    }
    auto missing = bind_vars(*t, partial, "r@example.com");
    FUZZ_CHECK(!missing.ok());
    FUZZ_CHECK(missing.error().message.find("\"" + names[0] + "\"") != std::string::npos);
  }
  return 0;
}
