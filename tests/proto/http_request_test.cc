#include "proto/http_request.h"

#include <gtest/gtest.h>

#include "tests/proto/test_util.h"

namespace ringmail::proto {
namespace {

using test::all_splits;
using test::HeapBytes;

struct Outcome {
  ParseStatus status = ParseStatus::kNeedMore;
  size_t consumed = 0;  // over all pieces
  int error_status = 0;
  HttpRequest req;
};

/// Feeds `pieces` in order (each in an exact-size heap buffer), as a
/// connection would: stops at the first kDone or kError.
Outcome feed(const std::vector<std::string>& pieces, const HttpLimits& limits = {}) {
  HttpRequestParser p(limits);
  Outcome o;
  for (const auto& piece : pieces) {
    HeapBytes b(piece);
    ParseResult r = p.feed(b.span());
    o.consumed += r.consumed;
    o.status = r.status;
    if (r.status == ParseStatus::kNeedMore) {
      EXPECT_EQ(r.consumed, piece.size()) << "kNeedMore takes everything";
      continue;
    }
    if (r.status == ParseStatus::kError) {
      o.error_status = p.error_status();
      EXPECT_FALSE(p.error().empty());
    } else {
      o.req = p.request();
    }
    return o;
  }
  return o;
}

Outcome feed_one(const std::string& s, const HttpLimits& limits = {}) {
  return feed({s}, limits);
}

TEST(HttpRequest, GetEverySplit) {
  const std::string in =
      "GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nAccept: text/plain\r\n\r\n";
  for (const auto& pieces : all_splits(in)) {
    Outcome o = feed(pieces);
    ASSERT_EQ(o.status, ParseStatus::kDone);
    EXPECT_EQ(o.consumed, in.size());
    EXPECT_EQ(o.req.method, "GET");
    EXPECT_EQ(o.req.target, "/metrics?x=1");
    EXPECT_EQ(o.req.path(), "/metrics");
    EXPECT_EQ(o.req.minor_version, 1);
    EXPECT_TRUE(o.req.keep_alive);
    ASSERT_NE(o.req.header("accept"), nullptr);
    EXPECT_EQ(*o.req.header("accept"), "text/plain");
    EXPECT_EQ(*o.req.header("host"), "127.0.0.1:9100");
  }
}

TEST(HttpRequest, PostBodyEverySplit) {
  const std::string in =
      "POST /api/inject/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
      "Authorization:  Bearer abc \r\n\r\n{\"a\":\"b\"}\r\n";
  for (const auto& pieces : all_splits(in)) {
    Outcome o = feed(pieces);
    ASSERT_EQ(o.status, ParseStatus::kDone);
    EXPECT_EQ(o.consumed, in.size());
    EXPECT_EQ(o.req.body, "{\"a\":\"b\"}\r\n");
    EXPECT_EQ(*o.req.header("authorization"), "Bearer abc");
  }
}

TEST(HttpRequest, PipelinedRequestsStopAtTheFirst) {
  const std::string first = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
  const std::string second = "GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string both = first + second;
  HttpRequestParser p;
  HeapBytes b(both);
  ParseResult r = p.feed(b.span());
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(r.consumed, first.size());
  EXPECT_EQ(p.request().body, "abc");
  p.reset();
  r = p.feed(b.span().subspan(first.size()));
  ASSERT_EQ(r.status, ParseStatus::kDone);
  EXPECT_EQ(r.consumed, second.size());
  EXPECT_EQ(p.request().target, "/b");
  EXPECT_FALSE(p.request().keep_alive);
}

TEST(HttpRequest, Http10ClosesAndNeedsNoHost) {
  Outcome o = feed_one("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(o.status, ParseStatus::kDone);
  EXPECT_EQ(o.req.minor_version, 0);
  EXPECT_FALSE(o.req.keep_alive);
}

TEST(HttpRequest, LeadingEmptyLinesAreIgnored) {
  Outcome o = feed_one("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(o.status, ParseStatus::kDone);
}

struct ErrorCase {
  const char* name;
  std::string input;
  int status;
};

TEST(HttpRequest, Refusals) {
  const std::vector<ErrorCase> cases = {
      {"bare_lf", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400},
      {"bare_lf_in_header", "GET / HTTP/1.1\r\nHost: x\n\r\n", 400},
      {"bare_cr", "GET / HTTP/1.1\r\nHost: x\ry: z\r\n\r\n", 400},
      {"no_host", "GET / HTTP/1.1\r\n\r\n", 400},
      {"two_hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"space_before_colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
      {"obs_fold", "GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", 400},
      {"no_colon", "GET / HTTP/1.1\r\nHost x\r\n\r\n", 400},
      {"ctl_in_value", std::string("GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n"), 400},
      {"nul_in_value", std::string("GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n", 28), 400},
      {"bad_method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"absolute_form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"two_spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"http2", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"garbage_version", "GET / HTTPS/1.1\r\nHost: x\r\n\r\n", 400},
      {"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
      {"te_and_cl",
       "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
       400},
      {"two_lengths",
       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400},
      {"length_list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", 400},
      {"length_sign", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400},
      {"length_huge", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
       400},
      {"post_without_length", "POST / HTTP/1.1\r\nHost: x\r\n\r\n", 411},
      {"body_too_large", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n", 413},
  };
  for (const auto& c : cases) {
    for (const auto& pieces : all_splits(c.input)) {
      Outcome o = feed(pieces);
      ASSERT_EQ(o.status, ParseStatus::kError) << c.name;
      EXPECT_EQ(o.error_status, c.status) << c.name;
    }
  }
}

TEST(HttpRequest, Limits) {
  HttpLimits l;
  l.max_request_line = 32;
  l.max_head_bytes = 128;
  l.max_headers = 3;
  l.max_body = 4;
  EXPECT_EQ(feed_one("GET /" + std::string(40, 'a') + " HTTP/1.1\r\n", l).error_status, 414);
  // The limit holds before the line ends: an endless line is refused early.
  EXPECT_EQ(feed_one("GET /" + std::string(40, 'a'), l).error_status, 414);
  EXPECT_EQ(feed_one("GET / HTTP/1.1\r\nHost: x\r\nA: " + std::string(120, 'a'), l).error_status,
            431);
  EXPECT_EQ(feed_one("GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", l).error_status,
            431);
  EXPECT_EQ(feed_one("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n", l).error_status,
            413);
  Outcome ok = feed_one("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd", l);
  EXPECT_EQ(ok.status, ParseStatus::kDone);
  // The request line exactly at the limit passes.
  std::string line = "GET /" + std::string(32 - 14, 'a') + " HTTP/1.1";
  ASSERT_EQ(line.size(), 32u);
  EXPECT_EQ(feed_one(line + "\r\nHost: x\r\n\r\n", l).status, ParseStatus::kDone);
}

TEST(HttpRequest, ConnectionCloseToken) {
  Outcome o = feed_one("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n");
  ASSERT_EQ(o.status, ParseStatus::kDone);
  EXPECT_FALSE(o.req.keep_alive);
}

TEST(HttpRequest, StartedAndInBody) {
  HttpRequestParser p;
  EXPECT_FALSE(p.started());
  std::string head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na";
  HeapBytes b(head);
  EXPECT_EQ(p.feed(b.span()).status, ParseStatus::kNeedMore);
  EXPECT_TRUE(p.started());
  EXPECT_TRUE(p.in_body());
  EXPECT_EQ(p.content_length(), 2u);
}

TEST(HttpResponse, Format) {
  std::string out;
  append_http_response(out, 429, "application/json", "{}", false, "Retry-After: 5\r\n");
  EXPECT_EQ(out,
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nCache-Control: no-store\r\nConnection: close\r\n"
            "Retry-After: 5\r\n\r\n{}");
}

}  // namespace
}  // namespace ringmail::proto
