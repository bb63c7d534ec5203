// Server command parser: the fuzz bytes are a client's command stream.
// Properties: whole-stream and piecewise parsing agree; `consumed` always
// ends at a line end; parsed paths are valid mailboxes; error replies use
// the documented codes.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "proto/smtp_server.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::proto;

namespace {

struct Item {
  bool ok;
  SmtpVerb verb;
  uint16_t code;
  std::string summary;
};

void check_command(const Command& c) {
  if (c.verb == SmtpVerb::kMail || c.verb == SmtpVerb::kRcpt) {
    if (c.null_path) {
      FUZZ_CHECK(c.verb == SmtpVerb::kMail && c.path.local.empty());
    } else if (!c.path.domain.empty()) {
      FUZZ_CHECK(parse_mailbox(c.path.str()).ok());
    } else {
      FUZZ_CHECK(c.verb == SmtpVerb::kRcpt);  // <Postmaster>
    }
  }
  for (char ch : c.arg) {
    FUZZ_CHECK(ch != '\r' && ch != '\n' && ch != '\0');
  }
}

std::vector<Item> run(std::string_view stream, uint32_t seed, const CommandParser::Limits& lim) {
  std::vector<Item> items;
  CommandParser p(lim);
  fuzz::Splitter split(seed);
  std::string pending;
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t n = split.next(stream.size() - pos);
    pending.append(stream.substr(pos, n));
    pos += n;
    while (!pending.empty()) {
      std::unique_ptr<char[]> buf(new char[pending.size()]);
      std::memcpy(buf.get(), pending.data(), pending.size());
      ParseResult r = p.parse(std::span<const char>(buf.get(), pending.size()));
      if (r.status == ParseStatus::kNeedMore) {
        FUZZ_CHECK(r.consumed == pending.size());
        pending.clear();
        break;
      }
      FUZZ_CHECK(r.consumed > 0 && r.consumed <= pending.size());
      FUZZ_CHECK(pending[r.consumed - 1] == '\n');
      if (r.status == ParseStatus::kDone) {
        check_command(p.command());
        items.push_back(
            Item{true, p.command().verb, 0, p.command().arg + "|" + p.command().path.str()});
      } else {
        uint16_t code = p.error().code;
        FUZZ_CHECK(code == 500 || code == 501 || code == 553 || code == 555);
        FUZZ_CHECK(!p.error().text.empty());
        items.push_back(Item{false, p.command().verb, code, p.error().text});
      }
      pending.erase(0, r.consumed);
    }
  }
  return items;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzInput in(data, size);
  uint8_t seed = in.byte();
  CommandParser::Limits limits;
  limits.allow_bare_lf = (seed & 1) != 0;
  if ((seed & 2) != 0) {
    limits.max_line = 40;
  }
  std::string_view stream = in.rest();
  std::vector<Item> whole = run(stream, 0, limits);
  std::vector<Item> parts = run(stream, seed | 1u << 8, limits);
  FUZZ_CHECK(whole.size() == parts.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    FUZZ_CHECK(whole[i].ok == parts[i].ok && whole[i].verb == parts[i].verb &&
               whole[i].code == parts[i].code && whole[i].summary == parts[i].summary);
  }
  // One line at a time through parse_command_line directly must not crash either.
  Command cmd;
  CommandError err;
  std::string_view line = stream.substr(0, stream.find('\n'));
  if (parse_command_line(line, &cmd, &err)) {
    check_command(cmd);
  }
  return 0;
}
