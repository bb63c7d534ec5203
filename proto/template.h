/// template.h — personalisation: a message with placeholders, per-recipient
/// variables, and rendering that keeps the shared parts shared.
///
/// Placeholder syntax (normative; docs/protocol.md repeats it):
///   {{name}}   is replaced by the recipient's value of variable `name`;
///              name: 1-64 bytes of [A-Za-z0-9_.-], case-sensitive, no
///              spaces inside the braces.
///   {{{{       is the escape for a literal "{{" (so "{{{{x}}" renders
///              "{{x}}").
///   Any other "{{" is an error with its byte offset (an unterminated
///   placeholder, an empty or invalid name): a typo never goes out as
///   literal braces. "}}" on its own is ordinary text.
/// Only batches that ask for personalisation are parsed as templates; other
/// messages may contain "{{" freely.
///
/// Values:
///   - a variable used in the header section (before the first empty line)
///     must not contain CR, LF or NUL: it cannot start a new field;
///   - in the body, a value must not contain NUL; its bare LF, bare CR and
///     CRLF line ends all become CRLF (the same rule as the message itself,
///     proto/message_body.h), so a rendered message is always normalised;
///   - rendering for DATA dot-stuffs what lands at a line start: a value
///     line starting with '.', and a static part starting with '.' right
///     after a value that ended a line;
///   - values are inserted as bytes: the platform encodes them for their
///     context (quoted-printable, HTML, RFC 2047) before sending;
///   - a variable the template uses but the recipient lacks is an error
///     naming the variable and the recipient, never an empty string;
///     variables the template does not use are ignored.
///
/// Per-recipient variable encoding (the value of the BATCH field that
/// carries a recipient's variables, and of Message::append_wire's `vars`):
///   vars  = *( name-length name value-length value )
///   name-length   u8, 1..64; name as in placeholders; each name once
///   value-length  u32 big-endian, at most kMaxValueBytes
/// Length-prefixed so values need no escaping and decoding never copies.
///
/// Sharing: Template owns the normalised text once, plus the dot-stuffed
/// form of its static parts for DATA. render() hands static parts to the
/// sink as views into the Template (send them by reference) and only the
/// rendered values as bytes to copy.
///
/// Thread safety: a Template is immutable after parse(); any thread may
/// render from it concurrently. VarList and bound values are views into the
/// caller's buffer.
/// Limits: TemplateLimits (placeholders, distinct names, name length) and
/// VarsLimits (variables, value and total sizes), each with a threat note.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto {

inline constexpr size_t kMaxVarName = 64;

struct TemplateLimits {
  /// Threat: a message of "{{a}}" repeated makes one render step per
  /// placeholder per recipient; bounded so rendering stays O(message).
  size_t max_placeholders = 10'000;
  /// Distinct variable names per template (binding is O(vars log names)).
  size_t max_names = 256;
};

struct VarsLimits {
  /// Threat: per-recipient data is multiplied by the recipient count; these
  /// bound what one recipient can make the engine hold.
  size_t max_vars = 256;
  size_t max_value = 64 * 1024;
  size_t max_total = 256 * 1024;  // encoded bytes per recipient
};

/// True when `name` is a valid variable name (1..kMaxVarName of
/// [A-Za-z0-9_.-]).
bool valid_var_name(std::string_view name);

class Template {
 public:
  /// A piece of the message in order: static text, or a variable slot.
  struct Part {
    uint32_t begin = 0;  // static: [begin, end) of text(); var: the placeholder's offset
    uint32_t end = 0;
    uint32_t stuffed_begin = 0;  // static: [stuffed_begin, stuffed_end) of stuffed_text()
    uint32_t stuffed_end = 0;
    int32_t slot = -1;  // variable index into names(), or -1 for static text
    bool in_header = false;
  };

  /// Parses a CRLF-normalised message (see proto/message_body.h). Errors
  /// give the byte offset and the problem. The text is copied once.
  static Result<Template> parse(std::string_view normalized, const TemplateLimits& limits = {});

  const std::vector<Part>& parts() const { return parts_; }
  /// Distinct variable names, sorted; a Part's slot indexes this.
  const std::vector<std::string>& names() const { return names_; }
  /// True for a name used in the header section (its values may not hold
  /// CR or LF), per names() index.
  bool slot_in_header(size_t slot) const { return slot_in_header_[slot] != 0; }
  bool has_vars() const { return !names_.empty(); }
  bool header_has_vars() const { return header_vars_; }
  bool body_has_vars() const { return body_vars_; }
  /// Offset in text() where the body starts (after the empty line), or
  /// text().size() when there is none. No placeholder spans it.
  size_t body_offset() const { return body_offset_; }
  std::string_view text() const { return text_; }
  /// The text Part::stuffed_begin/stuffed_end index: the static parts
  /// dot-stuffed inside (their first byte is the renderer's business).
  std::string_view stuffed_text() const { return stuffed_separate_ ? stuffed_ : text_; }
  /// Bytes of static text rendered for every recipient (BDAT form).
  uint64_t static_size() const { return static_size_; }
  size_t footprint() const;

 private:
  std::string text_;
  std::string stuffed_;
  std::vector<Part> parts_;
  std::vector<std::string> names_;
  std::vector<uint8_t> slot_in_header_;
  size_t body_offset_ = 0;
  uint64_t static_size_ = 0;
  bool header_vars_ = false;
  bool body_vars_ = false;
  bool stuffed_separate_ = false;  // some static line starts with '.'
};

struct Var {
  std::string_view name;
  std::string_view value;
};

/// Decodes a recipient's vars field (see the header). Errors: truncated
/// lengths, invalid or repeated names, a value or total over `limits`.
Result<std::vector<Var>> decode_vars(std::string_view encoded, const VarsLimits& limits = {});
/// Appends one variable in the encoding above (clients, tests). The caller
/// keeps names valid and values within the limits.
void append_var(std::string& out, std::string_view name, std::string_view value);

/// A recipient's values in slot order (Template::names()), as views.
using BoundVars = std::vector<std::string_view>;

/// Checks a recipient's encoded vars against a template and returns the
/// values per slot. Errors name the recipient and the variable: missing,
/// CR/LF/NUL in a header value, NUL in a body value, or a malformed field.
Result<BoundVars> bind_vars(const Template& t, std::string_view encoded, std::string_view recipient,
                            const VarsLimits& limits = {});

/// Receives a rendered message piece by piece, in order.
class RenderSink {
 public:
  virtual ~RenderSink() = default;
  /// Bytes inside the Template (static text): valid as long as it lives;
  /// reference them rather than copy.
  virtual void shared(std::string_view bytes) = 0;
  /// Per-recipient bytes (values, stuffing dots): valid only during the
  /// call; copy them.
  virtual void copied(std::string_view bytes) = 0;
};

struct RenderInfo {
  uint64_t size = 0;       // bytes rendered (stuffing dots included when stuffed)
  bool eight_bit = false;  // some value has a byte >= 0x80 (static text: see BodyInfo)
};

/// Renders the message for one recipient. `vars` come from bind_vars() for
/// this template. `stuffed`: the DATA form (dot-stuffed, without the final
/// ".\r\n"); otherwise the normalised form BDAT sends.
RenderInfo render(const Template& t, const BoundVars& vars, bool stuffed, RenderSink& sink);

/// The size render(t, vars, false, ...) produces, without rendering.
uint64_t rendered_size(const Template& t, const BoundVars& vars);

/// Renders into one string (tests, signing a rendered message).
std::string render_to_string(const Template& t, const BoundVars& vars, bool stuffed = false);

}  // namespace ringmail::proto
