/// clock.h — the engine's time source.
///
/// Every timer, retry schedule and timeout in the engine reads time through
/// a Clock so tests can drive time by hand (ManualClock) instead of
/// sleeping. `now()` is monotonic; `wall_ms()` is only used to stamp events.
/// Thread safety: both implementations may be read from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace ringmail::engine {

using Nanos = std::chrono::nanoseconds;
using Millis = std::chrono::milliseconds;
/// Monotonic time since an arbitrary epoch.
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Nanos>;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
  /// Milliseconds since the Unix epoch, for event timestamps.
  virtual int64_t wall_ms() const = 0;
  /// True when time only moves when a test advances it.
  virtual bool manual() const { return false; }
};

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  int64_t wall_ms() const override;
  static SystemClock& instance();
};

/// A clock moved by tests. advance() does not wake shards by itself; the
/// engine's advance_clock_for_test() does both.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(TimePoint start = TimePoint(std::chrono::hours(1)),
                       int64_t wall_start_ms = 1'767'225'600'000)  // 2026-01-01T00:00:00Z
      : now_ns_(start.time_since_epoch().count()),
        wall_start_ms_(wall_start_ms),
        start_ns_(start.time_since_epoch().count()) {}
  TimePoint now() const override {
    return TimePoint(Nanos(now_ns_.load(std::memory_order_acquire)));
  }
  int64_t wall_ms() const override {
    return wall_start_ms_ + (now_ns_.load(std::memory_order_acquire) - start_ns_) / 1'000'000;
  }
  bool manual() const override { return true; }
  void advance(Nanos d) { now_ns_.fetch_add(d.count(), std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_ns_;
  int64_t wall_start_ms_;
  int64_t start_ns_;
};

/// RFC 3339 UTC timestamp with milliseconds: 2026-11-26T10:00:00.123Z
void append_rfc3339_ms(std::string& out, int64_t wall_ms);

}  // namespace ringmail::engine
