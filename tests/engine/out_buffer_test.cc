#include "engine/out_buffer.h"

#include <gtest/gtest.h>

#include <string>

namespace ringmail::engine {
namespace {

std::string gather(SendBatch& b) {
  std::string s;
  for (const iovec& v : b.iov()) {
    s.append(static_cast<const char*>(v.iov_base), v.iov_len);
  }
  return s;
}

TEST(OutBuffer, CommandsMergeAndBodiesAreReferencedInPlace) {
  MessageInit mi;
  mi.raw = "hello\r\n";
  MessageRef m = Message::create(std::move(mi));
  OutBuffer out;
  out.cmd() += "MAIL FROM:<a@b>\r\n";
  out.commit();
  out.cmd() += "DATA\r\n";
  out.commit();
  out.add_external(m->data_body(), m);
  out.add_static(".\r\n");
  SendBatch b;
  out.take(&b);
  EXPECT_TRUE(out.empty());
  const auto& iov = b.iov();
  ASSERT_EQ(iov.size(), 3u);                          // merged commands, the body, the terminator
  EXPECT_EQ(iov[1].iov_base, m->data_body().data());  // no copy of the body
  EXPECT_EQ(gather(b), "MAIL FROM:<a@b>\r\nDATA\r\nhello\r\n.\r\n");
  // Partial sends resume mid-piece.
  b.advance(5);
  EXPECT_EQ(gather(b), "FROM:<a@b>\r\nDATA\r\nhello\r\n.\r\n");
  b.advance(18);
  EXPECT_EQ(gather(b), "hello\r\n.\r\n");
  // Staging grows while a batch is in flight without touching it.
  out.cmd() += "QUIT\r\n";
  out.commit();
  EXPECT_EQ(gather(b), "hello\r\n.\r\n");
  b.advance(b.remaining());
  EXPECT_TRUE(b.done());
  out.take(&b);
  EXPECT_EQ(gather(b), "QUIT\r\n");
}

}  // namespace
}  // namespace ringmail::engine
