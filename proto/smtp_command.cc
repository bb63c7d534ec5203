#include "proto/smtp_command.h"

#include <array>

#include "proto/address.h"

namespace ringmail::proto {

namespace {

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Threat: CR, LF or NUL in an argument would end the command line early and
// let the rest of the argument run as a second command (bpo-43124).
bool has_line_breaker(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// EHLO/HELO argument: a domain, or an address literal of printable bytes.
Result<void> check_helo_domain(std::string_view domain) {
  if (has_line_breaker(domain)) {
    return make_error(Errc::kInvalidArgument, "CR, LF or NUL in EHLO domain");
  }
  if (domain.size() >= 3 && domain.front() == '[' && domain.back() == ']' && domain.size() <= 255) {
    for (char ch : domain.substr(1, domain.size() - 2)) {
      unsigned char c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c >= 0x7f || c == '[' || c == ']' || c == '\\') {
        return make_error(Errc::kInvalidArgument, "invalid address literal in EHLO");
      }
    }
    return ok_result();
  }
  return validate_domain(domain);
}

Result<void> check_path(std::string_view path, bool allow_empty) {
  if (has_line_breaker(path)) {
    return make_error(Errc::kInvalidArgument, "CR, LF or NUL in address");
  }
  if (path.empty()) {
    if (allow_empty) {
      return ok_result();
    }
    return make_error(Errc::kInvalidArgument, "empty recipient address");
  }
  Result<Mailbox> m = parse_mailbox(path);
  if (!m) {
    return std::move(m).take_error();
  }
  return ok_result();
}

size_t append_literal(std::string& out, std::string_view line) {
  out.append(line);
  return line.size();
}

}  // namespace

Result<size_t> append_ehlo(std::string& out, std::string_view domain) {
  Result<void> r = check_helo_domain(domain);
  if (!r) {
    return std::move(r).take_error();
  }
  size_t before = out.size();
  out.append("EHLO ").append(domain).append("\r\n");
  return out.size() - before;
}

Result<size_t> append_helo(std::string& out, std::string_view domain) {
  Result<void> r = check_helo_domain(domain);
  if (!r) {
    return std::move(r).take_error();
  }
  size_t before = out.size();
  out.append("HELO ").append(domain).append("\r\n");
  return out.size() - before;
}

Result<size_t> append_mail_from(std::string& out, std::string_view reverse_path,
                                const MailParams& params) {
  Result<void> r = check_path(reverse_path, /*allow_empty=*/true);
  if (!r) {
    return std::move(r).take_error();
  }
  size_t before = out.size();
  out.append("MAIL FROM:<").append(reverse_path).push_back('>');
  if (params.size != 0) {
    out.append(" SIZE=").append(std::to_string(params.size));
  }
  if (params.body == BodyType::k7Bit) {
    out.append(" BODY=7BIT");
  } else if (params.body == BodyType::k8BitMime) {
    out.append(" BODY=8BITMIME");
  }
  if (params.smtputf8) {
    out.append(" SMTPUTF8");
  }
  out.append("\r\n");
  return out.size() - before;
}

Result<size_t> append_rcpt_to(std::string& out, std::string_view forward_path) {
  Result<void> r = check_path(forward_path, /*allow_empty=*/false);
  if (!r) {
    return std::move(r).take_error();
  }
  size_t before = out.size();
  out.append("RCPT TO:<").append(forward_path).append(">\r\n");
  return out.size() - before;
}

size_t append_data(std::string& out) {
  return append_literal(out, "DATA\r\n");
}

size_t append_bdat(std::string& out, uint64_t chunk_size, bool last) {
  size_t before = out.size();
  out.append("BDAT ").append(std::to_string(chunk_size));
  out.append(last ? " LAST\r\n" : "\r\n");
  return out.size() - before;
}

size_t append_rset(std::string& out) {
  return append_literal(out, "RSET\r\n");
}
size_t append_noop(std::string& out) {
  return append_literal(out, "NOOP\r\n");
}
size_t append_quit(std::string& out) {
  return append_literal(out, "QUIT\r\n");
}
size_t append_starttls(std::string& out) {
  return append_literal(out, "STARTTLS\r\n");
}

Result<size_t> append_auth_plain(std::string& out, std::string_view user, std::string_view pass) {
  if (user.empty()) {
    return make_error(Errc::kInvalidArgument, "empty AUTH user name");
  }
  // NUL separates the SASL PLAIN fields; inside one it would shift them.
  if (user.find('\0') != std::string_view::npos || pass.find('\0') != std::string_view::npos) {
    return make_error(Errc::kInvalidArgument, "NUL in AUTH credentials");
  }
  std::string raw;
  raw.reserve(user.size() + pass.size() + 2);
  raw.push_back('\0');
  raw.append(user);
  raw.push_back('\0');
  raw.append(pass);
  size_t before = out.size();
  out.append("AUTH PLAIN ");
  append_base64(out, raw);
  out.append("\r\n");
  return out.size() - before;
}

void append_base64(std::string& out, std::string_view bytes) {
  out.reserve(out.size() + (bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8) | at(i + 2);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back(kBase64Alphabet[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t v = at(i) << 16;
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.append("==");
  } else if (rest == 2) {
    uint32_t v = (at(i) << 16) | (at(i + 1) << 8);
    out.push_back(kBase64Alphabet[(v >> 18) & 63]);
    out.push_back(kBase64Alphabet[(v >> 12) & 63]);
    out.push_back(kBase64Alphabet[(v >> 6) & 63]);
    out.push_back('=');
  }
}

Result<std::string> decode_base64(std::string_view b64) {
  static const std::array<int8_t, 256> kTable = [] {
    std::array<int8_t, 256> t{};
    t.fill(-1);
    for (size_t k = 0; k < kBase64Alphabet.size(); ++k) {
      t[static_cast<unsigned char>(kBase64Alphabet[k])] = static_cast<int8_t>(k);
    }
    return t;
  }();
  if (b64.size() % 4 != 0) {
    return make_error(Errc::kSyntax, "base64 length is not a multiple of 4");
  }
  std::string out;
  out.reserve(b64.size() / 4 * 3);
  for (size_t i = 0; i < b64.size(); i += 4) {
    bool last_quad = i + 4 == b64.size();
    size_t pad = 0;
    if (last_quad) {
      pad = b64[i + 3] == '=' ? (b64[i + 2] == '=' ? 2 : 1) : 0;
    }
    uint32_t v = 0;
    for (size_t k = 0; k < 4 - pad; ++k) {
      int8_t d = kTable[static_cast<unsigned char>(b64[i + k])];
      if (d < 0) {
        return make_error(Errc::kSyntax, "invalid base64 character");
      }
      v |= static_cast<uint32_t>(d) << (18 - 6 * k);
    }
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (pad < 2) {
      out.push_back(static_cast<char>((v >> 8) & 0xff));
    }
    if (pad < 1) {
      out.push_back(static_cast<char>(v & 0xff));
    }
  }
  return out;
}

}  // namespace ringmail::proto
