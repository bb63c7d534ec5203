/// smtp_command.h — the SMTP client's command writer.
///
/// Pure functions that append exactly one command line (terminated by CRLF)
/// to a caller-owned buffer and return the number of bytes appended.
/// Arguments are validated: CR, LF and NUL are refused everywhere (the
/// command-injection class of Python bpo-43124), and paths must be valid
/// mailboxes (or empty for the null reverse-path). On error nothing is
/// appended.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proto/result.h"

namespace ringmail::proto {

enum class BodyType : uint8_t { kOmit, k7Bit, k8BitMime };

struct MailParams {
  uint64_t size = 0;  // SIZE= value; 0 = omit
  BodyType body = BodyType::kOmit;
  bool smtputf8 = false;
};

Result<size_t> append_ehlo(std::string& out, std::string_view domain);
Result<size_t> append_helo(std::string& out, std::string_view domain);
/// `reverse_path` is the bare address ("" for the null sender): the writer
/// adds the angle brackets.
Result<size_t> append_mail_from(std::string& out, std::string_view reverse_path,
                                const MailParams& params);
Result<size_t> append_rcpt_to(std::string& out, std::string_view forward_path);
size_t append_data(std::string& out);
/// "BDAT <n>[ LAST]\r\n" — the chunk bytes themselves are sent by the caller.
size_t append_bdat(std::string& out, uint64_t chunk_size, bool last);
size_t append_rset(std::string& out);
size_t append_noop(std::string& out);
size_t append_quit(std::string& out);
size_t append_starttls(std::string& out);
/// AUTH PLAIN with an initial response (RFC 4954): base64(authzid NUL user NUL pass).
Result<size_t> append_auth_plain(std::string& out, std::string_view user, std::string_view pass);

/// RFC 4648 base64 (with padding); used by AUTH.
void append_base64(std::string& out, std::string_view bytes);
/// Decodes RFC 4648 base64; whitespace is not allowed. Error on bad input.
Result<std::string> decode_base64(std::string_view b64);

}  // namespace ringmail::proto
