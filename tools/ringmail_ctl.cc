// ringmail-ctl — queue control for a running ringmaild, over its control socket
// (control.socket; by default ringmail-ctl.sock next to ringmail.sock).
//
//   ringmail-ctl [--socket PATH] queue [--json] [--all] [DOMAIN-PATTERN]
//   ringmail-ctl [--socket PATH] list [DOMAIN-PATTERN]
//   ringmail-ctl [--socket PATH] pause DOMAIN-PATTERN
//   ringmail-ctl [--socket PATH] resume DOMAIN-PATTERN
//   ringmail-ctl [--socket PATH] flush DOMAIN-PATTERN
//   ringmail-ctl [--socket PATH] drop-batch BATCH-ID
//   ringmail-ctl [--socket PATH] stats
//   ringmail-ctl [--socket PATH] rules [DOMAIN-PATTERN]
//   ringmail-ctl [--socket PATH] rules cancel ID|DOMAIN-PATTERN
//   ringmail-ctl [--socket PATH] suppression list [PATTERN [LIMIT]]
//   ringmail-ctl [--socket PATH] suppression check ADDRESS
//   ringmail-ctl [--socket PATH] suppression add ADDRESS [REASON [TTL_S [NOTE...]]]
//   ringmail-ctl [--socket PATH] suppression remove ADDRESS
//   ringmail-ctl [--socket PATH] reopen-logs
//   ringmail-ctl [--socket PATH] reload
//
// Patterns: an exact domain, "*.example.com" for subdomains, or "*". Prints
// the daemon's JSON reply (`queue`: a summary per destination, see
// tools/queue_summary.h); exit status 0 when it says ok, 1 when not, 2 on
// usage or connection errors.
#include <cstdio>
#include <string>

#include "tools/batch_client.h"
#include "tools/queue_summary.h"

namespace {

/// `queue [--json] [--all] [PATTERN]` becomes "list PATTERN"; the reply is
/// summarised instead of printed.
struct QueueView {
  bool on = false;
  bool json = false;
  bool all = false;
};

int print_queue(const QueueView& view, const std::string& reply) {
  auto rows = ringmail::tools::parse_listing(reply);
  if (!rows.ok()) {
    std::fprintf(stderr, "ringmail-ctl: %s\n", rows.error().message.c_str());
    return 1;
  }
  std::string out = view.json ? ringmail::tools::format_queue_json(std::move(*rows), view.all)
                              : ringmail::tools::format_queue(std::move(*rows), view.all);
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket = "ringmail-ctl.sock";
  std::string line;
  QueueView queue;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket = argv[++i];
    } else if (queue.on && (a == "--json" || a == "--all")) {
      (a == "--json" ? queue.json : queue.all) = true;
    } else if (a == "queue" && line.empty()) {
      queue.on = true;
      line = "list";
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: ringmail-ctl [--socket PATH] COMMAND [ARG]\n"
          "  --socket PATH         the daemon's control.socket (default ringmail-ctl.sock)\n"
          "  queue [--json] [--all] [PATTERN]\n"
          "                        the queue per destination, like postqueue -p: queued,\n"
          "                        in-flight and deferred recipients, oldest, connections,\n"
          "                        pause and backoff, the last deferral and the next retry;\n"
          "                        totals at the end. Destinations without mail are left\n"
          "                        out unless --all; --json for scripts\n"
          "  list [PATTERN]        destinations with queued, in-flight and deferred counts,\n"
          "                        connections, pause and backoff state (raw JSON)\n"
          "  pause PATTERN         stop delivering to matching domains (mail waits)\n"
          "  resume PATTERN        deliver again\n"
          "  flush PATTERN         retry every deferred recipient of matching domains now\n"
          "  drop-batch ID         remove a batch's queued recipients (dropped events)\n"
          "  stats                 totals\n"
          "  rules [PATTERN]       active effects of provider automation rules (Suspend,\n"
          "                        SetConfig, Bounce) with their ids and end times\n"
          "  rules cancel ID|PATTERN\n"
          "                        end one effect, or those of matching destinations\n"
          "  suppression list [PATTERN [LIMIT]]\n"
          "                        suppressed addresses matching a glob (* and ?), at most\n"
          "                        LIMIT (1000)\n"
          "  suppression check ADDRESS\n"
          "                        whether ADDRESS is suppressed, why and until when\n"
          "  suppression add ADDRESS [REASON [TTL_S [NOTE...]]]\n"
          "                        suppress ADDRESS; REASON: manual (default), unsubscribed,\n"
          "                        invalid_recipient; TTL_S seconds, 0 = never expires\n"
          "  suppression remove ADDRESS\n"
          "                        make ADDRESS deliverable again\n"
          "  reopen-logs           reopen the event file (after it was renamed, for log\n"
          "                        rotation); answers once the old file is complete\n"
          "  reload                read the configuration file again and apply what can\n"
          "                        change without a restart (the reply lists what was\n"
          "                        applied and what needs a restart); a file that does\n"
          "                        not load changes nothing\n"
          "PATTERN: example.com, *.example.com or *\n");
      return 0;
    } else {
      line += line.empty() ? a : " " + a;
    }
  }
  if (line.empty()) {
    std::fprintf(stderr, "ringmail-ctl: no command (try --help)\n");
    return 2;
  }
  auto client = ringmail::tools::BatchClient::connect(socket, "ringmail-ctl");
  if (!client.ok()) {
    std::fprintf(stderr, "ringmail-ctl: %s\n", client.error().message.c_str());
    return 2;
  }
  client->queue_frame(ringmail::proto::FrameType::kControl, line);
  for (;;) {
    auto f = client->next(30'000);
    if (!f.ok()) {
      std::fprintf(stderr, "ringmail-ctl: %s\n", f.error().message.c_str());
      return 2;
    }
    if (!*f) {
      std::fprintf(stderr, "ringmail-ctl: no reply within 30 s\n");
      return 2;
    }
    if ((*f)->type == ringmail::proto::FrameType::kError) {
      std::fprintf(stderr, "ringmail-ctl: %s\n", (*f)->payload.c_str());
      return 2;
    }
    if ((*f)->type == ringmail::proto::FrameType::kControlReply) {
      if (queue.on) {
        return print_queue(queue, (*f)->payload);
      }
      std::printf("%s\n", (*f)->payload.c_str());
      return (*f)->payload.find("\"ok\":true") != std::string::npos ? 0 : 1;
    }
  }
}
