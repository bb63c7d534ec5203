#include "engine/clock.h"

#include <cstdio>
#include <ctime>

namespace ringmail::engine {

int64_t SystemClock::wall_ms() const {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

void append_rfc3339_ms(std::string& out, int64_t wall_ms) {
  time_t secs = static_cast<time_t>(wall_ms / 1000);
  int ms = static_cast<int>(wall_ms % 1000);
  if (ms < 0) {
    ms += 1000;
    secs -= 1;
  }
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[40];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  out.append(buf, static_cast<size_t>(n));
}

}  // namespace ringmail::engine
