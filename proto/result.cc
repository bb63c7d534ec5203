#include "proto/result.h"

#include <execinfo.h>
#include <unistd.h>

namespace ringmail {

std::string_view errc_name(Errc c) {
  switch (c) {
    case Errc::kInvalidArgument:
      return "invalid_argument";
    case Errc::kSyntax:
      return "syntax";
    case Errc::kLimit:
      return "limit";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kIo:
      return "io";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kClosed:
      return "closed";
    case Errc::kProtocol:
      return "protocol";
    case Errc::kConfig:
      return "config";
    case Errc::kNotFound:
      return "not_found";
    case Errc::kBusy:
      return "busy";
    case Errc::kInternal:
      return "internal";
  }
  return "unknown";
}

void panic(const char* file, int line, const char* what) {
  std::fprintf(stderr, "ringmail: internal error at %s:%d: %s\n", file, line, what);
  void* frames[64];
  int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  std::abort();
}

}  // namespace ringmail
