// Bulk-sender header fields: table-driven placement, refusals and value
// validation.
#include "proto/bulk_headers.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringmail::proto {
namespace {

constexpr int64_t kJan2026 = 1767225600;  // Thu, 01 Jan 2026 00:00:00 UTC

TEST(BulkHeaders, DateFormat) {
  EXPECT_EQ(format_rfc5322_date(kJan2026), "Thu, 01 Jan 2026 00:00:00 +0000");
  EXPECT_EQ(format_rfc5322_date(kJan2026 + 86400 * 45 + 3661), "Sun, 15 Feb 2026 01:01:01 +0000");
}

TEST(BulkHeaders, MessageId) {
  EXPECT_EQ(make_message_id("b18f-42", 0xabc, "mta.example.com"),
            "<b18f-42.0000000000000abc@mta.example.com>");
  // Only dot-atom-safe bytes survive from the batch id; placeholders cannot form.
  EXPECT_EQ(make_message_id("a.b{{c}}@<x>", 1, "h.example"),
            "<a_b__c____x_.0000000000000001@h.example>");
  EXPECT_EQ(make_message_id("", 2, "bad domain"), "<0000000000000002@ringmail.invalid>");
  EXPECT_EQ(make_message_id(std::string(100, 'x'), 3, "h.example").size(),
            1 + 64 + 1 + 16 + 1 + 9 + 1);
}

TEST(BulkHeaders, Placement) {
  struct Case {
    const char* name;
    std::string in;
    std::string out;
  };
  BulkHeaderOptions o;
  o.add_date = true;
  o.date_s = kJan2026;
  o.message_id = "<id@h.example>";
  o.list_unsubscribe = "https://u.example/{{token}}";
  o.list_unsubscribe_mailto = "mailto:unsub@u.example";
  o.feedback_id = "c1:cust:news:esp";
  const std::string added =
      "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
      "Message-ID: <id@h.example>\r\n"
      "List-Unsubscribe: <https://u.example/{{token}}>,\r\n <mailto:unsub@u.example>\r\n"
      "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
      "Feedback-ID: c1:cust:news:esp\r\n";
  const Case cases[] = {
      {"body", "From: a@b\r\nSubject: s\r\n\r\nbody\r\n",
       "From: a@b\r\nSubject: s\r\n" + added + "\r\nbody\r\n"},
      {"empty body", "From: a@b\r\n\r\n", "From: a@b\r\n" + added + "\r\n"},
      {"no empty line", "From: a@b\r\n", "From: a@b\r\n" + added},
      {"folded last field", "From: a@b\r\nTo: x,\r\n y\r\n\r\nb\r\n",
       "From: a@b\r\nTo: x,\r\n y\r\n" + added + "\r\nb\r\n"},
      {"no header section", "\r\nbody\r\n", added + "\r\nbody\r\n"},
  };
  for (const Case& c : cases) {
    std::string msg = c.in;
    auto n = add_bulk_headers(msg, o);
    ASSERT_TRUE(n.ok()) << c.name << ": " << n.error().message;
    EXPECT_EQ(msg, c.out) << c.name;
    EXPECT_EQ(*n, added.size()) << c.name;
  }
}

TEST(BulkHeaders, PresentDateAndMessageIdAreKept) {
  BulkHeaderOptions o;
  o.add_date = true;
  o.date_s = kJan2026;
  o.message_id = "<new@h.example>";
  std::string msg = "date: Mon, 1 Dec 2025 00:00:00 +0000\r\nMESSAGE-id: <old@x>\r\n\r\nb\r\n";
  const std::string before = msg;
  auto n = add_bulk_headers(msg, o);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(msg, before);
  // Only an https URI gets the One-Click field (RFC 8058 needs HTTPS).
  BulkHeaderOptions m;
  m.list_unsubscribe_mailto = "mailto:u@x.example";
  msg = "From: a@b\r\n\r\nb\r\n";
  ASSERT_TRUE(add_bulk_headers(msg, m).ok());
  EXPECT_EQ(msg, "From: a@b\r\nList-Unsubscribe: <mailto:u@x.example>\r\n\r\nb\r\n");
}

TEST(BulkHeaders, Refusals) {
  BulkHeaderOptions unsub;
  unsub.list_unsubscribe = "https://u.example/x";
  BulkHeaderOptions fbl;
  fbl.feedback_id = "a:b";
  struct Case {
    const char* name;
    const BulkHeaderOptions* o;
    std::string msg;
    const char* error;
  };
  const Case cases[] = {
      {"list-unsubscribe present", &unsub, "From: a@b\r\nlist-unsubscribe: <x>\r\n\r\n",
       "already has a List-Unsubscribe"},
      {"post present", &unsub, "From: a@b\r\nList-Unsubscribe-Post: x\r\n\r\n",
       "List-Unsubscribe-Post"},
      {"feedback-id present", &fbl, "Feedback-ID: z\r\n\r\nb\r\n", "Feedback-ID"},
      {"unparsable header", &unsub, "not a header\r\n\r\nb\r\n", "does not parse"},
  };
  for (const Case& c : cases) {
    std::string msg = c.msg;
    auto n = add_bulk_headers(msg, *c.o);
    ASSERT_FALSE(n.ok()) << c.name;
    EXPECT_NE(n.error().message.find(c.error), std::string::npos)
        << c.name << ": " << n.error().message;
    EXPECT_EQ(msg, c.msg) << c.name << ": unchanged on error";
  }
  // Date and Message-ID alone never refuse a message.
  BulkHeaderOptions courtesy;
  courtesy.add_date = true;
  courtesy.message_id = "<a@b>";
  std::string junk = "not a header\r\n\r\nb\r\n";
  auto n = add_bulk_headers(junk, courtesy);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST(BulkHeaders, Validation) {
  EXPECT_TRUE(validate_unsubscribe_https("https://u.example/{{token}}?a=b%20c").ok());
  EXPECT_TRUE(validate_unsubscribe_https("HTTPS://u.example/").ok());
  for (const std::string& bad : std::vector<std::string>{
           "http://u.example/", "https://", "https://u.example/ x", "https://u.example/>",
           "https://u.example/\r\nX: y", "https://u.example/\"", "https://u.example/\x80",
           "https://" + std::string(kMaxUnsubscribeUri, 'a')}) {
    EXPECT_FALSE(validate_unsubscribe_https(bad).ok()) << bad;
  }
  EXPECT_TRUE(validate_unsubscribe_mailto("mailto:u@x.example?subject=unsub").ok());
  EXPECT_FALSE(validate_unsubscribe_mailto("https://u.example/").ok());
  EXPECT_TRUE(validate_feedback_id("c1:cust 7:news:esp").ok());
  for (const std::string& bad :
       std::vector<std::string>{"", " a", "a ", "a\r\nb", "a\tb", std::string(201, 'a')}) {
    EXPECT_FALSE(validate_feedback_id(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace ringmail::proto
