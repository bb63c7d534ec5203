/// parse.h — the common shape of every incremental codec in proto/.
///
/// A parser is an object with explicit state. Each call takes the bytes the
/// caller has and returns {status, consumed}:
///   - kDone:     one unit (reply, command, frame) is complete; `consumed`
///                bytes were used and the caller may drop them. Call again
///                with the remaining bytes for the next unit.
///   - kNeedMore: all `consumed` (== input size) bytes were taken; any
///                partial token is stashed inside the parser.
///   - kError:    the unit is malformed; `consumed` says how far the parser
///                resynchronised (it may be 0 when the stream cannot be
///                resynchronised, in which case the caller must close).
/// Thread safety: a parser object is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringmail::proto {

enum class ParseStatus : uint8_t { kDone, kNeedMore, kError };

struct ParseResult {
  ParseStatus status;
  size_t consumed;
};

}  // namespace ringmail::proto
