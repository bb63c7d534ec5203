#include "engine/failpoint.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace ringmail::engine {
namespace {

struct Plan {
  std::string name;
  long target = 0;
  std::atomic<long> hits{0};
};

Plan* load() {
  const char* v = std::getenv("RINGMAIL_FAILPOINT");
  if (v == nullptr || std::strchr(v, ':') == nullptr) {
    return nullptr;
  }
  auto* p = new Plan();
  const char* colon = std::strchr(v, ':');
  p->name.assign(v, static_cast<size_t>(colon - v));
  p->target = std::strtol(colon + 1, nullptr, 10);
  return p;
}

Plan* g_plan = load();

}  // namespace

bool g_failpoints_armed = g_plan != nullptr;

void failpoint_hit(const char* name) {
  if (g_plan == nullptr || g_plan->name != name) {
    return;
  }
  if (g_plan->hits.fetch_add(1) + 1 == g_plan->target) {
    static const char kMsg[] = "ringmail: failpoint reached, killing the process\n";
    ssize_t w = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    (void)w;
    ::kill(::getpid(), SIGKILL);
  }
}

}  // namespace ringmail::engine
