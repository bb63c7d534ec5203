/// dkim_reference.h — a slow, literal reading of RFC 6376 canonicalisation
/// (sections 3.4.1-3.4.4), kept apart from proto/dkim.cc on purpose: it
/// works on whole strings, one rule per step, in the order the RFC lists
/// them, and shares no code with the streaming implementation. The unit
/// tests and tests/fuzz/dkim_canon_fuzz.cc compare the two.
///
/// Conventions shared with proto/dkim.h (they are decisions, not RFC text):
/// only CRLF ends a line; WSP is SP or HTAB; an unterminated last body line
/// is a line (its trailing WSP goes under relaxed, and a CRLF is added).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ringmail::proto::reference {

inline bool wsp(char c) {
  return c == ' ' || c == '\t';
}

/// Splits on CRLF. The last element is what follows the last CRLF (empty
/// when the text ends with CRLF or is empty).
inline std::vector<std::string> split_crlf(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') {
      out.push_back(cur);
      cur.clear();
      ++i;
    } else {
      cur.push_back(s[i]);
    }
  }
  out.push_back(cur);
  return out;
}

inline std::string strip_trailing_wsp(std::string s) {
  while (!s.empty() && wsp(s.back())) {
    s.pop_back();
  }
  return s;
}

inline std::string strip_leading_wsp(std::string s) {
  size_t i = 0;
  while (i < s.size() && wsp(s[i])) {
    ++i;
  }
  return s.substr(i);
}

inline std::string compress_wsp(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (wsp(s[i])) {
      out.push_back(' ');
      while (i + 1 < s.size() && wsp(s[i + 1])) {
        ++i;
      }
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

/// RFC 6376 3.4.3 (simple) and 3.4.4 (relaxed) body canonicalisation.
inline std::string body(std::string_view b, bool relaxed) {
  std::vector<std::string> lines = split_crlf(b);
  // The element after the last CRLF is a line only when it is not empty
  // (a CRLF will be added to it); when empty there was no such line.
  std::string last = lines.back();
  lines.pop_back();
  if (relaxed) {
    // a. Reduce whitespace: WSP at the end of lines is ignored, WSP runs
    //    become one SP.
    for (std::string& l : lines) {
      l = compress_wsp(strip_trailing_wsp(l));
    }
    last = compress_wsp(strip_trailing_wsp(last));
  }
  if (!last.empty()) {
    lines.push_back(last);
  }
  // b. Ignore all empty lines at the end of the body.
  while (!lines.empty() && lines.back().empty()) {
    lines.pop_back();
  }
  if (lines.empty()) {
    return relaxed ? "" : "\r\n";  // relaxed: erratum 1384; simple: one CRLF
  }
  std::string out;
  for (const std::string& l : lines) {
    out += l;
    out += "\r\n";
  }
  return out;
}

/// RFC 6376 3.4.1 (simple) and 3.4.2 (relaxed) for one whole field (name,
/// colon, value, folding, final CRLF).
inline std::string header(std::string_view field, bool relaxed) {
  if (!relaxed) {
    return std::string(field);
  }
  size_t colon = field.find(':');
  std::string name(field.substr(0, colon));
  std::string value(colon == std::string_view::npos ? std::string_view() : field.substr(colon + 1));
  // Convert the name to lower case.
  for (char& c : name) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  // Unfold: remove the CRLFs (the folding ones and the field's last).
  std::string unfolded;
  for (std::string& piece : split_crlf(value)) {
    unfolded += piece;
  }
  // WSP runs become one SP; WSP at the end of the value goes; WSP before
  // and after the colon goes.
  value = strip_leading_wsp(strip_trailing_wsp(compress_wsp(unfolded)));
  name = strip_trailing_wsp(name);
  return name + ":" + value + "\r\n";
}

}  // namespace ringmail::proto::reference
