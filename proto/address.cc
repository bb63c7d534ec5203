#include "proto/address.h"

#include "proto/text_util.h"

namespace ringmail::proto {

namespace {

using internal::is_alpha;
using internal::is_digit;
using internal::utf8_sequence_length;

Error invalid(const char* what) {
  return make_error(Errc::kInvalidArgument, what);
}

// RFC 5322 atext.
bool is_atext(char c) {
  constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return is_alpha(c) || is_digit(c) || kSpecials.find(c) != std::string_view::npos;
}

bool is_hex(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool valid_ipv4(std::string_view s) {
  int parts = 0;
  size_t i = 0;
  while (parts < 4) {
    size_t digits = 0;
    unsigned value = 0;
    while (i < s.size() && is_digit(s[i]) && digits < 3) {
      value = value * 10 + static_cast<unsigned>(s[i] - '0');
      ++i;
      ++digits;
    }
    if (digits == 0 || value > 255) {
      return false;
    }
    ++parts;
    if (parts < 4) {
      if (i >= s.size() || s[i] != '.') {
        return false;
      }
      ++i;
    }
  }
  return i == s.size();
}

bool valid_hex_group(std::string_view g) {
  if (g.empty() || g.size() > 4) {
    return false;
  }
  for (char c : g) {
    if (!is_hex(c)) {
      return false;
    }
  }
  return true;
}

// RFC 5321 4.1.3 IPv6-addr: full, compressed ("::" once), with an optional
// IPv4 tail counting as two groups.
bool valid_ipv6(std::string_view s) {
  size_t groups = 0;
  bool compressed = false;
  size_t i = 0;
  if (s.substr(0, 2) == "::") {
    compressed = true;
    i = 2;
  }
  while (i < s.size()) {
    size_t end = s.find(':', i);
    std::string_view part = s.substr(i, end == std::string_view::npos ? end : end - i);
    if (end == std::string_view::npos && part.find('.') != std::string_view::npos) {
      if (!valid_ipv4(part)) {
        return false;
      }
      groups += 2;
      break;
    }
    if (!valid_hex_group(part)) {
      return false;
    }
    ++groups;
    if (end == std::string_view::npos) {
      break;
    }
    i = end + 1;
    if (i < s.size() && s[i] == ':') {
      if (compressed) {
        return false;
      }
      compressed = true;
      ++i;
    } else if (i == s.size()) {
      return false;  // a single trailing ':'
    }
  }
  return compressed ? groups <= 7 : groups == 8;
}

Result<void> check_literal(std::string_view d) {
  if (d.size() < 3 || d.back() != ']') {
    return invalid("malformed address literal");
  }
  std::string_view inner = d.substr(1, d.size() - 2);
  if (inner.size() > 5 && internal::iequals(inner.substr(0, 5), "IPv6:")) {
    if (valid_ipv6(inner.substr(5))) {
      return ok_result();
    }
    return invalid("invalid IPv6 address literal");
  }
  if (valid_ipv4(inner)) {
    return ok_result();
  }
  return invalid("invalid address literal");
}

Result<void> check_domain(std::string_view d, bool* utf8) {
  if (d.empty()) {
    return invalid("empty domain");
  }
  if (d.size() > kMaxDomain) {
    return invalid("domain longer than 255 octets");
  }
  size_t start = 0;
  while (start <= d.size()) {
    size_t dot = d.find('.', start);
    std::string_view label = d.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty()) {
      return invalid("empty label in domain");
    }
    if (label.size() > kMaxLabel) {
      return invalid("domain label longer than 63 octets");
    }
    if (label.front() == '-' || label.back() == '-') {
      return invalid("domain label starts or ends with a hyphen");
    }
    for (size_t i = 0; i < label.size();) {
      char c = label[i];
      if (is_alpha(c) || is_digit(c) || c == '-') {
        ++i;
        continue;
      }
      size_t n = static_cast<unsigned char>(c) >= 0x80 ? utf8_sequence_length(label, i) : 0;
      if (n == 0) {
        return invalid("invalid character in domain");
      }
      *utf8 = true;
      i += n;
    }
    if (dot == std::string_view::npos) {
      break;
    }
    start = dot + 1;
  }
  return ok_result();
}

Result<void> check_quoted_local(std::string_view local, bool* utf8) {
  if (local.size() < 2 || local.back() != '"') {
    return invalid("unterminated quoted local part");
  }
  std::string_view inner = local.substr(1, local.size() - 2);
  for (size_t i = 0; i < inner.size();) {
    unsigned char c = static_cast<unsigned char>(inner[i]);
    if (c == '\\') {
      if (i + 1 >= inner.size() || static_cast<unsigned char>(inner[i + 1]) < 0x20 ||
          static_cast<unsigned char>(inner[i + 1]) > 0x7e) {
        return invalid("invalid quoted pair in local part");
      }
      i += 2;
    } else if (c == '"') {
      return invalid("unescaped quote in local part");
    } else if (c >= 0x20 && c <= 0x7e) {
      ++i;
    } else {
      size_t n = utf8_sequence_length(inner, i);
      if (n == 0) {
        return invalid("invalid UTF-8 in local part");
      }
      *utf8 = true;
      i += n;
    }
  }
  return ok_result();
}

Result<void> check_dot_atom_local(std::string_view local, bool* utf8) {
  if (local.front() == '.' || local.back() == '.') {
    return invalid("local part starts or ends with a dot");
  }
  char prev = 0;
  for (size_t i = 0; i < local.size();) {
    char c = local[i];
    if (c == '.') {
      if (prev == '.') {
        return invalid("consecutive dots in local part");
      }
      prev = c;
      ++i;
      continue;
    }
    prev = c;
    if (is_atext(c)) {
      ++i;
      continue;
    }
    size_t n = static_cast<unsigned char>(c) >= 0x80 ? utf8_sequence_length(local, i) : 0;
    if (n == 0) {
      return invalid("invalid character in local part");
    }
    *utf8 = true;
    i += n;
  }
  return ok_result();
}

// Finds the '@' that separates local part and domain; npos when missing or
// when a quoted local part is unterminated.
size_t find_separator(std::string_view a) {
  if (a.empty() || a.front() != '"') {
    return a.find('@');
  }
  for (size_t i = 1; i < a.size(); ++i) {
    if (a[i] == '\\') {
      ++i;
    } else if (a[i] == '"') {
      return i + 1 < a.size() && a[i + 1] == '@' ? i + 1 : std::string_view::npos;
    }
  }
  return std::string_view::npos;
}

}  // namespace

std::string Mailbox::str() const {
  std::string out;
  out.reserve(local.size() + 1 + domain.size());
  out.append(local);
  out.push_back('@');
  out.append(domain);
  return out;
}

Result<Mailbox> parse_mailbox(std::string_view address) {
  if (address.empty()) {
    return invalid("empty address");
  }
  if (address.size() > kMaxMailbox) {
    return invalid("address longer than 254 octets");
  }
  for (char ch : address) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      return invalid("control character in address");
    }
    if (c == '<' || c == '>') {
      return invalid("angle bracket in address");
    }
  }
  size_t at = find_separator(address);
  if (at == std::string_view::npos) {
    return invalid(address.front() == '"' ? "malformed quoted local part" : "missing @");
  }
  std::string_view local = address.substr(0, at);
  std::string_view domain = address.substr(at + 1);
  if (local.empty()) {
    return invalid("empty local part");
  }
  if (local.size() > kMaxLocalPart) {
    return invalid("local part longer than 64 octets");
  }
  Mailbox m;
  Result<void> lr = local.front() == '"' ? check_quoted_local(local, &m.utf8)
                                         : check_dot_atom_local(local, &m.utf8);
  if (!lr) {
    return std::move(lr).take_error();
  }
  if (!domain.empty() && domain.front() == '[') {
    Result<void> dr = check_literal(domain);
    if (!dr) {
      return std::move(dr).take_error();
    }
    m.domain_literal = true;
  } else {
    Result<void> dr = check_domain(domain, &m.utf8);
    if (!dr) {
      return std::move(dr).take_error();
    }
  }
  m.local.assign(local);
  m.domain.assign(domain);
  return m;
}

Result<void> validate_domain(std::string_view domain) {
  bool utf8 = false;
  return check_domain(domain, &utf8);
}

std::string normalize_domain(std::string_view domain) {
  if (!domain.empty() && domain.back() == '.') {
    domain.remove_suffix(1);
  }
  std::string out(domain);
  for (char& c : out) {
    c = internal::ascii_lower(c);
  }
  return out;
}

}  // namespace ringmail::proto
