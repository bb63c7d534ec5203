// ringmaild — the ringmail delivery daemon: a thin main over the public
// embedding API (include/ringmail/ringmail.hpp).
//
//   ringmaild [--config FILE] [--check-config] [--print-default-config]
//
// Without --config the embedded default configuration is used (see
// docs/configuration.md). SIGTERM and SIGINT stop it cleanly: ingest stops,
// queued mail gets engine.shutdown_grace to finish, then it exits 0.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <ringmail/ringmail.hpp>

#include "engine/log.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ringmaild [--config FILE] [--check-config] [--print-default-config]\n"
               "  --config FILE           TOML configuration (default: built-in, see\n"
               "                          docs/configuration.md)\n"
               "  --check-config          validate the configuration and exit\n"
               "  --print-default-config  print the built-in configuration and exit\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--check-config") {
      check_only = true;
    } else if (a == "--print-default-config") {
      auto d = ringmail::Config::default_toml();
      std::fwrite(d.data(), 1, d.size(), stdout);
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "ringmaild: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  auto config = config_path.empty() ? ringmail::Config::parse("", "<default>")
                                    : ringmail::Config::load(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "ringmaild: configuration error: %s\n", config.error().message.c_str());
    return 1;
  }
  if (check_only) {
    std::printf("configuration ok\n");
    return 0;
  }

  // Signals are taken synchronously by this thread; every engine thread
  // inherits the blocked mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::string socket_path = config->ingest_socket();
  std::string route = config->default_route();
  auto grace = config->shutdown_grace();
  auto engine = ringmail::Engine::start(std::move(*config));
  if (!engine.ok()) {
    std::fprintf(stderr, "ringmaild: cannot start: %s\n", engine.error().message.c_str());
    return 1;
  }
#ifdef RINGMAIL_MIMALLOC
  const char* allocator = "mimalloc";
#else
  const char* allocator = "system";
#endif
  RM_LOG_INFO("ringmaild started: pid %d, socket %s, default route %s, allocator %s",
              static_cast<int>(getpid()), socket_path.empty() ? "(none)" : socket_path.c_str(),
              route.c_str(), allocator);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) {
      continue;
    }
    if (sig == SIGHUP) {
      RM_LOG_INFO("SIGHUP: configuration reload is not supported; restart to apply changes");
      continue;
    }
    RM_LOG_INFO("signal %d: stopping (up to %lldms for queued mail)", sig,
                static_cast<long long>(grace.count()));
    break;
  }
  (*engine)->shutdown(grace);
  auto st = (*engine)->stats();
  RM_LOG_INFO(
      "stopped: delivered %llu, deferred %llu, bounced %llu, still queued %llu",
      static_cast<unsigned long long>(st.delivered), static_cast<unsigned long long>(st.deferred),
      static_cast<unsigned long long>(st.bounced), static_cast<unsigned long long>(st.unfinished));
  return 0;
}
