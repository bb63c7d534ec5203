// The tools' command lines, run as child processes: a malformed or
// out-of-range number in an option is a usage error (exit status 2) with a
// message that names the option and the value — never an uncaught
// exception, and never a silently different value.
//
// Environment: RINGMAIL_INJECT, RINGMAIL_BENCH, RINGMAIL_PASSWD, RINGMAIL_SINK.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/e2e/harness.h"

namespace ringmail::testing {
namespace {

struct Case {
  std::vector<std::string> args;
  std::string option;  // named in the message
};

/// Runs `tool` with each case's arguments (between `common` and `trailer`)
/// and expects exit status 2 and a message naming the option (and, with
/// `names_value`, the value in quotes).
void expect_usage_errors(const std::string& env, const std::vector<std::string>& common,
                         const std::vector<Case>& cases, const std::vector<std::string>& trailer,
                         bool names_value = true) {
  const std::string tool = env_or(env.c_str(), "");
  ASSERT_FALSE(tool.empty()) << env << " is not set";
  TempDir dir;
  int n = 0;
  for (const Case& c : cases) {
    std::vector<std::string> argv = {tool};
    argv.insert(argv.end(), common.begin(), common.end());
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    argv.insert(argv.end(), trailer.begin(), trailer.end());
    std::string shown;
    for (size_t i = 1; i < argv.size(); ++i) {
      shown += " " + argv[i];
    }
    Child child;
    ASSERT_TRUE(child.start(argv, dir.path(), "run" + std::to_string(n++), dir.path())) << shown;
    int rc = child.wait(milliseconds(30'000));
    std::string err = child.err();
    EXPECT_EQ(rc, 2) << shown << "\n" << err;
    const std::string& value = c.args.back();
    EXPECT_NE(err.find(c.option + ": "), std::string::npos) << shown << "\n" << err;
    if (names_value) {
      EXPECT_NE(err.find("\"" + value + "\""), std::string::npos) << shown << "\n" << err;
    }
    EXPECT_EQ(err.find("terminate called"), std::string::npos) << shown << "\n" << err;
  }
}

TEST(ToolOptions, InjectRefusesMalformedNumbers) {
  expect_usage_errors("RINGMAIL_INJECT", {"--socket", "no-such.sock"},
                      {
                          {{"--count", "abc"}, "--count"},
                          {{"--count", "12abc"}, "--count"},
                          {{"--count", "-1"}, "--count"},
                          {{"--count", "0"}, "--count"},
                          {{"--count", "99999999999999999999"}, "--count"},
                          {{"--count", "1", "--size", "1e3"}, "--size"},
                          {{"--count", "1", "--batch", "99999999999999999999"}, "--batch"},
                          {{"--count", "1", "--batch", "4294967297"}, "--batch"},
                          {{"--count", "1", "--domains", " 5"}, "--domains"},
                          {{"--count", "1", "--window", "+5"}, "--window"},
                          {{"--count", "1", "--timeout", "nan"}, "--timeout"},
                          {{"--count", "1", "--timeout", "inf"}, "--timeout"},
                          {{"--count", "1", "--timeout", "-3"}, "--timeout"},
                          {{"--count", "1", "--timeout", "ten"}, "--timeout"},
                      },
                      {});
}

TEST(ToolOptions, BenchRefusesMalformedNumbers) {
  // "--help" after the bad value: a bench that wrongly accepted the value
  // stops at it with the plain usage text instead of running a benchmark.
  expect_usage_errors("RINGMAIL_BENCH", {},
                      {
                          {{"--count", "abc"}, "--count"},
                          {{"--count", "12abc"}, "--count"},
                          {{"--count", "-1"}, "--count"},
                          {{"--size", "2k"}, "--size"},
                          {{"--batch", "4294967297"}, "--batch"},
                          {{"--domains", "0"}, "--domains"},
                          {{"--mx-domains", "x"}, "--mx-domains"},
                          {{"--shards", "-2"}, "--shards"},
                          {{"--sink-threads", "1.5"}, "--sink-threads"},
                          {{"--conns", ""}, "--conns"},
                          {{"--rcpts-per-txn", "1e2"}, "--rcpts-per-txn"},
                          {{"--pipelined", "four"}, "--pipelined"},
                          {{"--timeout", "nan"}, "--timeout"},
                      },
                      {"--help"});
}

TEST(ToolOptions, PasswdRefusesMalformedIterations) {
  // "--help" last: ringmail-passwd never gets to read a password from
  // standard input, whether or not it accepted the value.
  expect_usage_errors("RINGMAIL_PASSWD", {"user"},
                      {
                          {{"-i", "abc"}, "-i"},
                          {{"-i", "-1"}, "-i"},
                          {{"-i", "+100000"}, "-i"},
                          {{"-i", " 100000"}, "-i"},
                          {{"--iterations", "99999999999999999999"}, "--iterations"},
                      },
                      {"--help"});
}

TEST(ToolOptions, SinkRefusesMalformedNumbers) {
  // The sink's messages name the option and the accepted range.
  expect_usage_errors("RINGMAIL_SINK", {},
                      {
                          {{"--threads", "abc"}, "--threads"},
                          {{"--max-connections", "-1"}, "--max-connections"},
                          {{"--delay-ms", "1x"}, "--delay-ms"},
                          {{"--defer-ratio", "nan"}, "--defer-ratio"},
                      },
                      {}, /*names_value=*/false);
}

}  // namespace
}  // namespace ringmail::testing
