/// json_reader.h — a bounded JSON (RFC 8259) reader for request bodies.
///
/// JsonDocument::parse() validates a whole document and records it as a
/// flat array of 20-byte nodes pointing into the caller's text (no copy of
/// strings or numbers): memory is bounded by JsonLimits::max_nodes, and
/// recursion by max_depth. The text must outlive the document.
///
/// Strict: one value with optional whitespace around it; strings in valid
/// UTF-8 without raw control characters; escapes as RFC 8259 7 gives them,
/// with \u surrogates paired; numbers in the RFC grammar (no leading zeros,
/// no '+', no NaN). Duplicate object keys are kept; find() returns the
/// first and count() says how many there are, so a caller can refuse them.
/// Errors name the byte offset.
///
/// Thread safety: a JsonDocument is immutable once parsed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto {

enum class JsonType : uint8_t { kNull, kFalse, kTrue, kNumber, kString, kArray, kObject };

struct JsonLimits {
  /// Threat: "[[[[…" nesting that would exhaust the stack.
  uint32_t max_depth = 32;
  /// Threat: "[0,0,0,…" that costs 20 bytes of nodes per 2 bytes of input.
  uint32_t max_nodes = 1u << 20;
};

class JsonDocument;

/// A view of one value of a document.
class JsonValue {
 public:
  JsonType type() const;
  bool is_string() const { return type() == JsonType::kString; }
  bool is_object() const { return type() == JsonType::kObject; }
  bool is_array() const { return type() == JsonType::kArray; }
  bool is_null() const { return type() == JsonType::kNull; }
  /// A string's value, unescaped (only for kString).
  std::string str() const;
  /// The source text of the value (a number's digits; a string's escaped
  /// contents without the quotes).
  std::string_view raw() const;
  /// Array items or object members in this container.
  uint32_t size() const;
  /// An array's items, in order (empty for other types).
  std::vector<JsonValue> items() const;
  /// An object's members, in order: key (a kString value) and value.
  std::vector<std::pair<JsonValue, JsonValue>> members() const;
  /// True when this is a string whose unescaped value is `s`.
  bool equals(std::string_view s) const;
  /// The first member named `key`, if any; count() how many have it.
  std::optional<JsonValue> find(std::string_view key) const;
  uint32_t count(std::string_view key) const;

 private:
  friend class JsonDocument;
  JsonValue(const JsonDocument* doc, uint32_t idx) : doc_(doc), idx_(idx) {}
  const JsonDocument* doc_;
  uint32_t idx_;
};

class JsonDocument {
 public:
  [[nodiscard]] static Result<JsonDocument> parse(std::string_view text,
                                                  const JsonLimits& limits = {});
  JsonValue root() const { return JsonValue(this, 0); }
  size_t nodes() const { return nodes_.size(); }

 private:
  friend class JsonValue;
  friend class JsonParser;
  struct Node {
    JsonType type;
    uint32_t begin;     // source offset: the value (strings: after the quote)
    uint32_t len;       // source length (strings: without the quotes)
    uint32_t children;  // arrays: items; objects: 2 × members (key nodes count)
    uint32_t next;      // index of the first node after this subtree
  };
  std::string_view text_;
  std::vector<Node> nodes_;
};

/// Unescapes the contents of a validated JSON string (between the quotes).
void append_json_unescaped(std::string& out, std::string_view escaped);

}  // namespace ringmail::proto
