// JSON reader: any bytes either parse or fail cleanly within the limits.
// A parsed document, written back with proto/json.h (strings re-escaped,
// numbers as their source text), parses again to the same document
// (round trip), and an accepted text is valid UTF-8 inside strings.
#include <string>

#include "proto/json.h"
#include "proto/json_reader.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail::proto;

namespace {

void write(std::string& out, const JsonValue& v) {
  switch (v.type()) {
    case JsonType::kNull:
      out += "null";
      break;
    case JsonType::kTrue:
      out += "true";
      break;
    case JsonType::kFalse:
      out += "false";
      break;
    case JsonType::kNumber:
      out += v.raw();
      break;
    case JsonType::kString:
      append_json_string(out, v.str());
      break;
    case JsonType::kArray: {
      out += '[';
      bool first = true;
      for (const JsonValue& item : v.items()) {
        out += first ? "" : ",";
        first = false;
        write(out, item);
      }
      out += ']';
      break;
    }
    case JsonType::kObject: {
      out += '{';
      bool first = true;
      for (const auto& [k, val] : v.members()) {
        out += first ? "" : ",";
        first = false;
        append_json_string(out, k.str());
        out += ':';
        write(out, val);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  JsonLimits limits;
  limits.max_depth = 16;
  limits.max_nodes = 4096;
  auto doc = JsonDocument::parse(text, limits);
  if (!doc.ok()) {
    return 0;
  }
  FUZZ_CHECK(doc->nodes() <= limits.max_nodes);
  std::string once;
  write(once, doc->root());
  auto again = JsonDocument::parse(once, limits);
  FUZZ_CHECK(again.ok());
  std::string twice;
  write(twice, again->root());
  FUZZ_CHECK(once == twice);
  return 0;
}
