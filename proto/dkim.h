/// dkim.h — the pure parts of DKIM signing (RFC 6376, RFC 8463): header
/// parsing, canonicalisation, signed-header selection, the DKIM-Signature
/// header text, base64.
///
/// Everything here is byte manipulation; the cryptography (SHA-256, RSA,
/// Ed25519) lives in engine/dkim.h. Hashing reaches proto/ only through the
/// narrow `Sha256` interface below, so proto_lib keeps no dependency.
///
/// Input convention: messages are CRLF-normalised (engine/message.h does
/// that once per message). Only CRLF ends a line here; a bare CR or LF is an
/// ordinary byte. That keeps the canonical form a pure function of the bytes
/// on the wire, which is what a verifier sees.
///
/// Signing flow (engine/dkim.cc):
///   1. split_header() finds the header fields and where the body starts;
///   2. a BodyCanonicalizer per body canonicalisation streams the body (in
///      any number of segments) into a Sha256: bh=;
///   3. select_signed_headers() picks the fields named in h= (bottom-up for
///      repeated names, plus one empty instance for each oversigned name)
///      and canonicalises them;
///   4. SignatureHeader builds "DKIM-Signature: v=1; ...; b=" folded at 78
///      columns; its canonical form (without CRLF) ends the header hash;
///   5. the signature is base64-encoded into b= by SignatureHeader::finish().
///
/// Thread safety: pure functions and per-call objects; no shared state.
/// Limits: HeaderLimits bounds the header section a signer will parse.
/// Diagnostics: Result errors name the line and what is wrong with it.
/// See also: engine/dkim.h (keys, signing), tests/proto/dkim_reference.h (the
/// slow reference canonicaliser used by tests and the differential fuzzer).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/result.h"

namespace ringmail::proto {

/// SHA-256 as proto/ sees it: the engine supplies an implementation
/// (wolfSSL's wc_Sha256); tests may supply one that records the bytes.
class Sha256 {
 public:
  static constexpr size_t kDigestSize = 32;
  using Digest = std::array<uint8_t, kDigestSize>;

  virtual ~Sha256() = default;
  virtual void update(std::string_view bytes) = 0;
  /// Returns the digest of everything updated since construction or the
  /// last finish(), and starts over.
  virtual Digest finish() = 0;
};

enum class Canon : uint8_t { kSimple, kRelaxed };

struct CanonPair {
  Canon header = Canon::kRelaxed;
  Canon body = Canon::kRelaxed;
  bool operator==(const CanonPair&) const = default;
};

std::string_view canon_name(Canon c);
/// Parses a c= value: "relaxed/simple", "simple" (body simple), ...
Result<CanonPair> parse_canonicalization(std::string_view text);

// ---------------------------------------------------------------------------
// Header section

/// One header field of a message.
struct HeaderField {
  std::string_view name;  // as written; trailing WSP before the colon excluded
  std::string_view raw;   // the whole field: name, colon, value with folding, final CRLF
};

struct HeaderLimits {
  /// Threat: a message made of millions of one-byte fields would make the
  /// signer's field index as large as the message many times over.
  size_t max_fields = 2000;
  /// Header sections beyond this are refused (signing needs them whole).
  size_t max_section = 1u << 20;
};

struct SplitMessage {
  std::vector<HeaderField> fields;  // in message order
  /// Offset of the first body byte: just after the empty line; the message
  /// size when there is no empty line (no body).
  size_t body_offset = 0;
};

/// Splits a CRLF message into header fields and body. Errors: a line that is
/// neither a field ("name:" with a printable ASCII name) nor a continuation
/// (starting with SP or HTAB) of one; a header line without CRLF; too many
/// fields or too many bytes (`limits`). Views point into `message`.
Result<SplitMessage> split_header(std::string_view message, const HeaderLimits& limits = {});

/// The lower-cased domain of the (first) address of the message's single
/// From field. Errors: no From field, more than one, no address in it.
Result<std::string> from_domain(const SplitMessage& msg);

/// Appends the canonical form of one header field (its raw bytes, as in
/// HeaderField::raw, final CRLF included) to `out`, ending with CRLF:
///   simple  (RFC 6376 3.4.1): the bytes unchanged;
///   relaxed (3.4.2): name lower-cased, folding removed, WSP runs made one
///            SP, WSP before and after the colon and at the end removed.
void append_canonical_header(Canon c, std::string_view raw_field, std::string& out);

// ---------------------------------------------------------------------------
// Body

/// Streaming body canonicalisation (RFC 6376 3.4.3 and 3.4.4), fed the body
/// in any number of segments; writes the canonical bytes to `sink`.
///   simple:  trailing empty lines removed; exactly one CRLF at the end (an
///            empty body becomes CRLF).
///   relaxed: WSP at the end of a line removed, WSP runs made one SP,
///            trailing empty lines removed, a CRLF added after a final line
///            that lacks one; an empty body stays empty (RFC 6376 erratum
///            1384). WSP at the end of an unterminated final line is removed
///            too: on the wire SMTP adds that CRLF, and the canonical form
///            must be what a verifier computes after delivery.
/// Memory: O(1) beyond a small output buffer, whatever the body size.
class BodyCanonicalizer {
 public:
  BodyCanonicalizer(Canon c, Sha256* sink);
  BodyCanonicalizer(const BodyCanonicalizer&) = delete;
  BodyCanonicalizer& operator=(const BodyCanonicalizer&) = delete;

  void update(std::string_view bytes);
  /// Ends the body; call once. Pending output is flushed to the sink.
  void finish();
  /// Canonical bytes written so far (after finish(): the l= value).
  uint64_t length() const { return length_; }

 private:
  void emit(std::string_view bytes);
  void emit_content(std::string_view bytes);  // flushes held-back line ends / WSP first
  void flush();

  Canon canon_;
  Sha256* sink_;
  bool cr_ = false;     // the last byte seen was a CR (is it a CRLF?)
  bool wsp_ = false;    // relaxed: a WSP run is pending inside the line
  bool any_ = false;    // some content was emitted
  uint64_t crlfs_ = 0;  // line ends held back (trailing empty lines vanish)
  uint64_t length_ = 0;
  std::string buf_;
};

// ---------------------------------------------------------------------------
// Signed header fields

/// RFC 6376 5.4.1 recommendations plus what bulk senders need (RFC 8058
/// One-Click unsubscribe and Feedback-ID are only useful when signed).
inline constexpr std::array<std::string_view, 10> kDefaultSignedHeaders = {
    "From",         "Subject",          "Date",
    "To",           "Message-ID",       "MIME-Version",
    "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post",
    "Feedback-ID"};

struct SignedHeaders {
  std::string h;          // the h= value: names separated by ':'
  std::string canonical;  // canonical fields in h= order (each with CRLF)
};

/// Selects and canonicalises the fields to sign. For each distinct name of
/// `names` (case-insensitive; later duplicates ignored) every instance
/// present is signed, the last one first (RFC 6376 5.4.2: verifiers take
/// instances from the bottom up); a name with no instance is left out.
/// A name also listed in `oversign` is put in h= once more than it has
/// instances: that extra entry matches no field (it hashes as nothing), so a
/// field of that name added later breaks the signature (RFC 6376 8.15).
SignedHeaders select_signed_headers(const SplitMessage& msg, std::span<const std::string> names,
                                    std::span<const std::string> oversign, Canon c);

// ---------------------------------------------------------------------------
// The DKIM-Signature field

struct SignatureParams {
  std::string_view algorithm;  // "rsa-sha256" or "ed25519-sha256"
  CanonPair canon;
  std::string_view domain;              // d=
  std::string_view selector;            // s=
  int64_t timestamp = -1;               // t= (seconds since the epoch); omitted when < 0
  int64_t expiration = -1;              // x=; omitted when < 0
  std::optional<uint64_t> body_length;  // l=; omitted when empty (the default)
  std::string_view headers;             // h=, ':'-separated
  std::string_view body_hash;           // bh=, base64
};

/// Builds the field text "DKIM-Signature: v=1; a=...; ...; b=" folded at
/// kFoldColumn (a line break is "CRLF TAB", which tags and the h=, bh= and
/// b= values allow), then completes it with the signature.
class SignatureHeader {
 public:
  static constexpr size_t kFoldColumn = 78;

  explicit SignatureHeader(const SignatureParams& p);

  /// The field up to and including "b=", without CRLF: what the signer
  /// canonicalises and hashes last (RFC 6376 3.7, b= value empty).
  std::string_view unsigned_text() const { return text_; }
  /// The canonical form of unsigned_text() under `c`, without CRLF.
  std::string canonical_unsigned(Canon c) const;
  /// The complete field: unsigned_text() + the base64 signature, folded,
  /// + CRLF. Removing the b= value (with its folding) from it gives back
  /// unsigned_text(), which is how a verifier reconstructs the hash input.
  std::string finish(std::string_view signature_b64) const;

 private:
  void add_tag(std::string_view tag, std::string_view value, char split_at);
  std::string text_;
  size_t column_ = 0;
};

// ---------------------------------------------------------------------------
// Base64 (RFC 4648 section 4, with padding)

void append_base64(std::string& out, std::span<const uint8_t> bytes);
std::string base64(std::span<const uint8_t> bytes);
/// Decodes standard base64; SP, HTAB, CR and LF are skipped (FWS in tags,
/// PEM line breaks). Errors on any other byte or bad padding.
Result<std::string> base64_decode(std::string_view text);

}  // namespace ringmail::proto
