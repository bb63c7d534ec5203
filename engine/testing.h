/// testing.h — test-only hooks into an Engine (ringmail.hpp). Not
/// installed and not part of the public API: tests and in-tree tools that
/// link the internal static library include it.
///
/// Thread safety: as the Engine methods they stand beside (any thread).
#pragma once

#include <memory>

#include <ringmail/ringmail.hpp>

#include "engine/clock.h"
#include "engine/config.h"

namespace ringmail::engine {

class Runtime;
struct SpoolFaults;

/// Starts an engine from an already parsed internal configuration, reading
/// time from `clock` (a ManualClock; it must outlive the engine; null:
/// the system clock). Otherwise as Engine::start().
Expected<std::unique_ptr<Engine>> start_for_test(Config config, const Clock* clock = nullptr);
/// With a ManualClock: after advancing it, wake the shards so they look at
/// their timers.
void wake_for_test(Engine& engine);
/// Disk faults injected into the spool's I/O layer (process-wide).
SpoolFaults& spool_faults_for_test();

}  // namespace ringmail::engine
