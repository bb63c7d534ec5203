/// log.h — operator-facing log lines on stderr.
///
/// One line per call, written with a single write(2) so lines from
/// different shards never interleave. Format:
///   2026-11-26T10:00:00.123Z ringmail[shard 1] warning: text
/// Thread safety: any thread. Not for per-message logging on the hot path:
/// per-recipient outcomes are events (events.h), not log lines.
#pragma once

#include <cstdarg>
#include <optional>
#include <string_view>

namespace ringmail::engine {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

/// The process's level: lines below it are not written. Engine::start
/// sets it from the configuration's log_level.
void set_log_level(LogLevel level);
LogLevel log_level();
/// "debug", "info", "warning" or "error" (Config::log_level); nullopt for
/// anything else.
std::optional<LogLevel> parse_log_level(std::string_view name);
/// Sets the calling thread's shard number for log lines (-1 = none).
void set_log_shard(int shard);

void log_message(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace ringmail::engine

#define RM_LOG_DEBUG(...)                                                                 \
  do {                                                                                    \
    if (::ringmail::engine::log_level() <= ::ringmail::engine::LogLevel::kDebug) {        \
      ::ringmail::engine::log_message(::ringmail::engine::LogLevel::kDebug, __VA_ARGS__); \
    }                                                                                     \
  } while (0)
#define RM_LOG_INFO(...) \
  ::ringmail::engine::log_message(::ringmail::engine::LogLevel::kInfo, __VA_ARGS__)
#define RM_LOG_WARN(...) \
  ::ringmail::engine::log_message(::ringmail::engine::LogLevel::kWarning, __VA_ARGS__)
#define RM_LOG_ERROR(...) \
  ::ringmail::engine::log_message(::ringmail::engine::LogLevel::kError, __VA_ARGS__)
