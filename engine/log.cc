#include "engine/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <string>

#include "engine/clock.h"

namespace ringmail::engine {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
thread_local int t_shard = -1;

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void set_log_level(LogLevel level) {
  g_level.store(static_cast<int>(level));
}
LogLevel log_level() {
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}
std::optional<LogLevel> parse_log_level(std::string_view name) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarning, LogLevel::kError}) {
    if (name == level_name(l)) {
      return l;
    }
  }
  return std::nullopt;
}
void set_log_shard(int shard) {
  t_shard = shard;
}

void log_message(LogLevel level, const char* fmt, ...) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) {
    return;
  }
  std::string line;
  line.reserve(256);
  append_rfc3339_ms(line, SystemClock::instance().wall_ms());
  char prefix[64];
  int n = t_shard >= 0 ? std::snprintf(prefix, sizeof prefix, " ringmail[shard %d] %s: ", t_shard,
                                       level_name(level))
                       : std::snprintf(prefix, sizeof prefix, " ringmail %s: ", level_name(level));
  line.append(prefix, static_cast<size_t>(n));
  char body[1024];
  va_list ap;
  va_start(ap, fmt);
  int m = std::vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  if (m > 0) {
    line.append(body, std::min(static_cast<size_t>(m), sizeof body - 1));
  }
  line.push_back('\n');
  ssize_t w = ::write(STDERR_FILENO, line.data(), line.size());
  (void)w;
}

}  // namespace ringmail::engine
