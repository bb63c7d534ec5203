// ringmail-inject — sends batches to ringmaild over its Unix socket.
//
// From files:   ringmail-inject --eml msg.eml --rcpts list.txt [--batch K]
// Generated:    ringmail-inject --count N --size BYTES [--batch K] [--domains D]
// Reputation features: --option K=V (repeatable) sends batch options
// (docs/protocol.md), --personalise makes the message a template with
// {{name}}, {{addr}} and {{id}} and sends each recipient's values,
// --unsubscribed ADDR (repeatable) reports addresses as unsubscribed.
// Add --wait to subscribe to the batches' events and wait until every
// accepted recipient has a final event (delivered or bounced); it then
// prints delivery rate and latency percentiles. --json adds one JSON
// summary line (used by ringmail-bench).
//
// Exit status: 0 all recipients accepted (and, with --wait, final);
// 1 some were rejected, bounced or not final in time; 2 usage or
// connection error.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "proto/batch_wire.h"
#include "proto/template.h"
#include "tools/batch_client.h"
#include "tools/cli_number.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string socket = "ringmail.sock";
  std::string eml;
  std::string rcpts_file;
  std::vector<std::string> rcpts;
  std::string sender = "sender@example.test";
  uint64_t count = 0;  // generated batches
  size_t size = 2048;
  uint32_t batch = 1;  // recipients per batch
  uint32_t domains = 1;
  std::string domain = "example.test";
  uint32_t window = 256;  // unacknowledged batches in flight
  bool wait = false;
  double timeout_s = 300;
  bool json = false;
  bool quiet = false;
  std::string events_out;
  std::string id_prefix;
  bool retry_busy = true;
  std::string acked_out;
  std::string rcpt_prefix = "user";
  std::vector<std::string> options;       // batch options, "name=value"
  bool personalise = false;               // template + per-recipient variables
  std::vector<std::string> unsubscribed;  // reported with the first batch
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ringmail-inject [options]\n"
               "  --socket PATH      ringmaild socket (default ringmail.sock)\n"
               "  --eml FILE         message to send (raw RFC 5322)\n"
               "  --rcpts FILE       recipients, one per line (with --eml)\n"
               "  --rcpt ADDR        a recipient (repeatable, with --eml)\n"
               "  --sender ADDR      envelope sender (default sender@example.test; \"\" = null)\n"
               "  --count N          generate N batches instead of --eml\n"
               "  --size BYTES       generated message size (default 2048)\n"
               "  --batch K          recipients per batch (default 1)\n"
               "  --domains D        spread generated recipients over D domains\n"
               "  --domain NAME      recipient domain (default example.test; with --domains:\n"
               "                     d<i>.NAME)\n"
               "  --window W         batches in flight before waiting for acks (default 256)\n"
               "  --wait             wait for a final event for every accepted recipient\n"
               "  --timeout S        give up waiting after S seconds (default 300)\n"
               "  --events-out FILE  write received event lines to FILE\n"
               "  --json             print a JSON summary line at the end\n"
               "  --acked-out FILE   append every accepted recipient to FILE when its batch is\n"
               "                     acknowledged (crash tests compare it with what arrived)\n"
               "  --rcpt-prefix STR  local part prefix of generated recipients (default user)\n"
               "  --no-retry-busy    report try-later answers instead of sending those batches\n"
               "                     again (by default they are resent, backing off 50 ms to 2 s)\n"
               "  --option K=V       a batch option (repeatable), e.g. feedback_id=c1:ringmail,\n"
               "                     list_unsubscribe=https://u.example/{{id}}, dkim_domain=D\n"
               "  --personalise      the message is a template: generated ones use {{name}},\n"
               "                     {{addr}} and {{id}}; every recipient gets name (its local\n"
               "                     part), addr and id (its position) (sets personalise=true)\n"
               "  --unsubscribed ADDR  report ADDR as unsubscribed (repeatable; first batch)\n"
               "  --quiet            no per-batch rejection lines\n");
}

std::string read_file(const std::string& path, bool* ok) {
  std::ifstream in(path, std::ios::binary);
  *ok = static_cast<bool>(in);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string make_message(size_t size, uint64_t n, const std::string& sender, bool personalise) {
  std::string m;
  m.reserve(size + 128);
  m += "From: <" + sender + ">\r\n";
  if (personalise) {
    m += "To: {{name}} <{{addr}}>\r\n";
    m += "Subject: ringmail-inject message " + std::to_string(n) + " for {{name}}\r\n";
  } else {
    m += "To: undisclosed-recipients:;\r\n";
    m += "Subject: ringmail-inject message " + std::to_string(n) + "\r\n";
  }
  m += "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n";
  m += "Message-ID: <inject." + std::to_string(getpid()) + "." + std::to_string(n) +
       "@ringmail.test>\r\n";
  m += "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n";
  if (personalise) {
    m += "Hello {{name}}, this is message {{id}} for you.\r\n";
  }
  static const char kLine[] =
      "The quick brown fox jumps over the lazy dog while ringmail delivers the mail.";
  while (m.size() + 2 < size) {
    size_t left = size - m.size() - 2;
    size_t n2 = std::min(left, sizeof kLine - 1);
    m.append(kLine, n2);
    m += "\r\n";
  }
  return m;
}

double pct(std::vector<double>& v, double p) {
  if (v.empty()) {
    return 0;
  }
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

bool parse_args(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    bool ok = true;
    std::string error;
    auto whole = [&](uint64_t min, uint64_t max, auto* out) {
      return ringmail::tools::parse_whole_number(a, v, min, max, out, &error);
    };
    if (a == "--wait") {
      o->wait = true;
    } else if (a == "--json") {
      o->json = true;
    } else if (a == "--quiet") {
      o->quiet = true;
    } else if (a == "--no-retry-busy") {
      o->retry_busy = false;
    } else if (a == "--personalise") {
      o->personalise = true;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if ((v = val()) == nullptr) {
      std::fprintf(stderr, "ringmail-inject: %s needs a value\n", a.c_str());
      return false;
    } else if (a == "--socket") {
      o->socket = v;
    } else if (a == "--eml") {
      o->eml = v;
    } else if (a == "--rcpts") {
      o->rcpts_file = v;
    } else if (a == "--rcpt") {
      o->rcpts.push_back(v);
    } else if (a == "--sender") {
      o->sender = v;
    } else if (a == "--count") {
      ok = whole(1, 1'000'000'000'000, &o->count);
    } else if (a == "--size") {
      ok = whole(1, 1u << 30, &o->size);
    } else if (a == "--batch") {
      ok = whole(1, 10'000'000, &o->batch);
    } else if (a == "--domains") {
      ok = whole(1, 1'000'000, &o->domains);
    } else if (a == "--domain") {
      o->domain = v;
    } else if (a == "--window") {
      ok = whole(1, 1'000'000, &o->window);
    } else if (a == "--timeout") {
      ok = ringmail::tools::parse_seconds(a, v, 30 * 86'400, &o->timeout_s, &error);
    } else if (a == "--events-out") {
      o->events_out = v;
    } else if (a == "--acked-out") {
      o->acked_out = v;
    } else if (a == "--rcpt-prefix") {
      o->rcpt_prefix = v;
    } else if (a == "--option") {
      if (std::strchr(v, '=') == nullptr) {
        std::fprintf(stderr, "ringmail-inject: --option needs NAME=VALUE\n");
        return false;
      }
      o->options.push_back(v);
    } else if (a == "--unsubscribed") {
      o->unsubscribed.push_back(v);
    } else {
      std::fprintf(stderr, "ringmail-inject: unknown option %s\n", a.c_str());
      return false;
    }
    if (!ok) {
      std::fprintf(stderr, "ringmail-inject: %s\n", error.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse_args(argc, argv, &o)) {
    usage(stderr);
    return 2;
  }
  std::string message;
  if (!o.eml.empty()) {
    bool ok = false;
    message = read_file(o.eml, &ok);
    if (!ok) {
      std::fprintf(stderr, "ringmail-inject: cannot read %s\n", o.eml.c_str());
      return 2;
    }
    if (!o.rcpts_file.empty()) {
      std::ifstream in(o.rcpts_file);
      if (!in) {
        std::fprintf(stderr, "ringmail-inject: cannot read %s\n", o.rcpts_file.c_str());
        return 2;
      }
      for (std::string line; std::getline(in, line);) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
          line.pop_back();
        }
        if (!line.empty()) {
          o.rcpts.push_back(line);
        }
      }
    }
    if (o.rcpts.empty()) {
      std::fprintf(stderr, "ringmail-inject: --eml needs --rcpts or --rcpt\n");
      return 2;
    }
    o.count = (o.rcpts.size() + o.batch - 1) / o.batch;
  } else if (o.count == 0) {
    usage(stderr);
    return 2;
  }
  o.id_prefix = "inj" + std::to_string(getpid()) + "-";

  auto client = ringmail::tools::BatchClient::connect(o.socket, "ringmail-inject");
  if (!client.ok()) {
    std::fprintf(stderr, "ringmail-inject: %s\n", client.error().message.c_str());
    return 2;
  }
  ringmail::tools::BatchClient& c = *client;
  if (o.wait) {
    c.subscribe(/*own_only=*/true);
  }
  FILE* events_out = o.events_out.empty() ? nullptr : std::fopen(o.events_out.c_str(), "w");

  std::vector<Clock::time_point> sent_at(o.count);
  uint64_t sent = 0, acked = 0, accepted_rcpts = 0, rejected_rcpts = 0, rejected_batches = 0,
           busy_batches = 0, delivered = 0, bounced = 0, deferred = 0, total_rcpts = 0;
  std::vector<double> latencies;
  latencies.reserve(o.wait ? o.count * o.batch : 0);
  Clock::time_point start = Clock::now(), last_ack = start, last_final = start;
  auto deadline = start + std::chrono::duration<double>(o.timeout_s);
  int exit_code = 0;

  std::function<void(const ringmail::proto::Ack&)> handle_ack;
  auto handle = [&](const ringmail::tools::Frame& f) -> bool {
    using ringmail::proto::FrameType;
    if (f.type == FrameType::kAck) {
      auto ack = ringmail::proto::decode_ack(f.payload);
      if (!ack.ok()) {
        std::fprintf(stderr, "ringmail-inject: bad ACK: %s\n", ack.error().message.c_str());
        return false;
      }
      ++acked;
      last_ack = Clock::now();
      if (handle_ack) {
        handle_ack(*ack);
      }
      accepted_rcpts += ack->accepted;
      rejected_rcpts += ack->rejections.size();
      if (ack->status == ringmail::proto::AckStatus::kTryLater ||
          ack->status == ringmail::proto::AckStatus::kSpoolUnavailable) {
        ++busy_batches;
      } else if (ack->status != ringmail::proto::AckStatus::kAccepted) {
        ++rejected_batches;
      }
      bool busy_ack = ack->status == ringmail::proto::AckStatus::kTryLater ||
                      ack->status == ringmail::proto::AckStatus::kSpoolUnavailable;
      if (!o.quiet && (!busy_ack || !o.retry_busy) &&
          (ack->status != ringmail::proto::AckStatus::kAccepted || !ack->rejections.empty())) {
        std::fprintf(stderr, "batch %s: %s%s%s\n", ack->batch_id.c_str(),
                     std::string(ringmail::proto::ack_status_name(ack->status)).c_str(),
                     ack->reason.empty() ? "" : ": ", ack->reason.c_str());
        for (const auto& r : ack->rejections) {
          std::fprintf(stderr, "  recipient #%u %s: %s\n", r.index,
                       std::string(ringmail::proto::reject_reason_name(r.reason)).c_str(),
                       r.text.c_str());
        }
      }
      return true;
    }
    if (f.type == FrameType::kEvent) {
      if (events_out != nullptr) {
        std::fwrite(f.payload.data(), 1, f.payload.size(), events_out);
        std::fputc('\n', events_out);
      }
      std::string type = ringmail::tools::event_field(f.payload, "type");
      if (type == "deferred") {
        ++deferred;
        return true;
      }
      if (type == "delivered") {
        ++delivered;
      } else if (type == "bounced") {
        ++bounced;
      }
      last_final = Clock::now();
      std::string batch = ringmail::tools::event_field(f.payload, "batch");
      uint64_t idx = 0;
      std::string not_ours;  // e.g. a delivery report's "<id>-dsn1"
      if (batch.rfind(o.id_prefix, 0) == 0 &&
          ringmail::tools::parse_whole_number("batch", batch.substr(o.id_prefix.size()), 0,
                                              UINT64_MAX, &idx, &not_ours)) {
        if (idx < sent_at.size()) {
          latencies.push_back(
              std::chrono::duration<double, std::milli>(last_final - sent_at[idx]).count());
        }
      }
      return true;
    }
    if (f.type == FrameType::kError) {
      std::fprintf(stderr, "ringmail-inject: server error: %s\n", f.payload.c_str());
      return false;
    }
    return true;
  };

  // Batches in flight, in send order (ACKs come back in that order), and
  // batches answered try-later waiting to be sent again.
  struct Pending {
    uint64_t index;
    std::string payload;
  };
  std::deque<Pending> unacked;
  std::deque<std::pair<Clock::time_point, Pending>> again;
  uint64_t finished = 0, next = 0, busy_streak = 0;
  std::string generated;
  std::vector<std::string> vars;  // per recipient of the batch being built (--personalise)
  std::vector<std::string> gen_rcpts;
  FILE* acked_out = o.acked_out.empty() ? nullptr : std::fopen(o.acked_out.c_str(), "a");
  auto recipients_of = [&](uint64_t i) {
    std::vector<std::string> rs;
    if (o.eml.empty()) {
      for (uint32_t k = 0; k < o.batch; ++k) {
        uint64_t n = i * o.batch + k;
        std::string dom =
            o.domains > 1 ? "d" + std::to_string(n % o.domains) + "." + o.domain : o.domain;
        rs.push_back(o.rcpt_prefix + std::to_string(n) + "@" + dom);
      }
    } else {
      size_t first = i * o.batch;
      size_t last = std::min(o.rcpts.size(), first + o.batch);
      for (size_t k = first; k < last; ++k) {
        rs.push_back(o.rcpts[k]);
      }
    }
    return rs;
  };
  auto build = [&](uint64_t i) {
    ringmail::proto::BatchView b;
    std::string id = o.id_prefix + std::to_string(i);
    b.batch_id = id;
    b.sender = o.sender;
    b.has_sender = true;
    if (o.eml.empty()) {
      generated = make_message(o.size, i, o.sender, o.personalise);
      b.message = generated;
      gen_rcpts.clear();
      for (uint32_t k = 0; k < o.batch; ++k) {
        uint64_t n = i * o.batch + k;
        std::string dom =
            o.domains > 1 ? "d" + std::to_string(n % o.domains) + "." + o.domain : o.domain;
        gen_rcpts.push_back(o.rcpt_prefix + std::to_string(n) + "@" + dom);
      }
      for (const auto& r : gen_rcpts) {
        b.recipients.push_back(r);
      }
    } else {
      b.message = message;
      size_t first = i * o.batch;
      size_t last = std::min(o.rcpts.size(), first + o.batch);
      for (size_t k = first; k < last; ++k) {
        b.recipients.push_back(o.rcpts[k]);
      }
    }
    for (const auto& opt : o.options) {
      b.options.push_back(opt);
    }
    if (o.personalise) {
      if (std::none_of(o.options.begin(), o.options.end(),
                       [](const std::string& x) { return x.starts_with("personalise="); })) {
        b.options.push_back("personalise=true");
      }
      vars.assign(b.recipients.size(), std::string());
      for (size_t k = 0; k < b.recipients.size(); ++k) {
        std::string_view r = b.recipients[k];
        ringmail::proto::append_var(vars[k], "addr", r);
        ringmail::proto::append_var(vars[k], "id", std::to_string(i * o.batch + k));
        ringmail::proto::append_var(vars[k], "name", r.substr(0, r.rfind('@')));
      }
      for (const auto& v : vars) {
        b.recipient_vars.push_back(v);
      }
    }
    if (i == 0) {
      for (const auto& u : o.unsubscribed) {
        b.unsubscribed.push_back(u);
      }
    }
    total_rcpts += b.recipients.size();
    std::string payload;
    ringmail::proto::encode_batch(payload, b);
    return payload;
  };
  auto on_ack_status = [&](const ringmail::proto::Ack& ack) {
    Pending p = std::move(unacked.front());
    unacked.pop_front();
    bool busy = ack.status == ringmail::proto::AckStatus::kTryLater ||
                ack.status == ringmail::proto::AckStatus::kSpoolUnavailable;
    if (busy && o.retry_busy) {
      auto delay = std::chrono::milliseconds(
          std::min<uint64_t>(2000, 50u << std::min<uint64_t>(busy_streak++, 5)));
      again.emplace_back(Clock::now() + delay, std::move(p));
      return;
    }
    busy_streak = 0;
    ++finished;
    if (acked_out != nullptr && ack.status == ringmail::proto::AckStatus::kAccepted) {
      std::vector<std::string> rs = recipients_of(p.index);
      size_t rej = 0;
      for (uint32_t k = 0; k < rs.size(); ++k) {
        if (rej < ack.rejections.size() && ack.rejections[rej].index == k) {
          ++rej;
          continue;
        }
        std::fprintf(acked_out, "%s\n", rs[k].c_str());
      }
      std::fflush(acked_out);
    }
  };
  handle_ack = on_ack_status;
  while (finished < o.count) {
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "ringmail-inject: timed out with %llu batches unacknowledged\n",
                   static_cast<unsigned long long>(o.count - finished));
      return 1;
    }
    while (unacked.size() < o.window) {
      if (!again.empty() && again.front().first <= Clock::now()) {
        Pending p = std::move(again.front().second);
        again.pop_front();
        c.queue_frame(ringmail::proto::FrameType::kBatch, p.payload);
        unacked.push_back(std::move(p));
        ++sent;
      } else if (next < o.count) {
        sent_at[next] = Clock::now();
        Pending p{next, build(next)};
        ++next;
        c.queue_frame(ringmail::proto::FrameType::kBatch, p.payload);
        unacked.push_back(std::move(p));
        ++sent;
      } else {
        break;
      }
      if (c.pending_output() > (1u << 20)) {
        break;
      }
    }
    bool can_send_more = unacked.size() < o.window && (next < o.count || !again.empty());
    // Then everything that has arrived: events for big batches come much
    // faster than one per batch built, and the daemon drops a subscriber
    // that lets ingest.max_subscriber_backlog bytes pile up.
    for (int timeout = can_send_more && c.pending_output() == 0 ? 0 : 20;; timeout = 0) {
      auto f = c.next(timeout);
      if (!f.ok()) {
        std::fprintf(stderr, "ringmail-inject: %s\n", f.error().message.c_str());
        return 2;
      }
      if (!*f) {
        break;
      }
      if (!handle(**f)) {
        return 2;
      }
    }
  }
  double inject_s = std::chrono::duration<double>(last_ack - start).count();
  if (o.wait) {
    while (delivered + bounced < accepted_rcpts && Clock::now() < deadline) {
      auto f = c.next(500);
      if (!f.ok()) {
        std::fprintf(stderr, "ringmail-inject: %s\n", f.error().message.c_str());
        return 2;
      }
      if (*f && !handle(**f)) {
        return 2;
      }
    }
  }
  if (events_out != nullptr) {
    std::fclose(events_out);
  }
  double final_s = std::chrono::duration<double>(last_final - start).count();
  std::printf(
      "batches %llu sent, %llu rejected, %llu try-later; recipients %llu sent, %llu "
      "accepted, %llu rejected\n",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(rejected_batches),
      static_cast<unsigned long long>(busy_batches), static_cast<unsigned long long>(total_rcpts),
      static_cast<unsigned long long>(accepted_rcpts),
      static_cast<unsigned long long>(rejected_rcpts));
  std::printf("injected in %.3f s: %.0f batches/s\n", inject_s,
              inject_s > 0 ? static_cast<double>(sent) / inject_s : 0.0);
  if (o.wait) {
    std::printf(
        "final: delivered %llu, bounced %llu (deferred events %llu) in %.3f s: %.0f "
        "recipients/s\n",
        static_cast<unsigned long long>(delivered), static_cast<unsigned long long>(bounced),
        static_cast<unsigned long long>(deferred), final_s,
        final_s > 0 ? static_cast<double>(delivered + bounced) / final_s : 0.0);
    std::vector<double> l = latencies;
    std::printf("latency ms (batch sent -> final event): p50 %.1f p90 %.1f p99 %.1f max %.1f\n",
                pct(l, 50), pct(l, 90), pct(l, 99), pct(l, 100));
    if (delivered + bounced < accepted_rcpts) {
      std::fprintf(stderr, "ringmail-inject: %llu recipients without a final event\n",
                   static_cast<unsigned long long>(accepted_rcpts - delivered - bounced));
      exit_code = 1;
    }
  }
  if (o.json) {
    std::vector<double> l = latencies;
    std::printf(
        "{\"batches\":%llu,\"recipients\":%llu,\"accepted\":%llu,\"rejected\":%llu,"
        "\"try_later\":%llu,\"delivered\":%llu,\"bounced\":%llu,\"deferred_events\":%llu,"
        "\"inject_s\":%.3f,\"final_s\":%.3f,\"p50_ms\":%.2f,\"p90_ms\":%.2f,"
        "\"p99_ms\":%.2f,\"max_ms\":%.2f}\n",
        static_cast<unsigned long long>(sent), static_cast<unsigned long long>(total_rcpts),
        static_cast<unsigned long long>(accepted_rcpts),
        static_cast<unsigned long long>(rejected_rcpts),
        static_cast<unsigned long long>(busy_batches), static_cast<unsigned long long>(delivered),
        static_cast<unsigned long long>(bounced), static_cast<unsigned long long>(deferred),
        inject_s, final_s, pct(l, 50), pct(l, 90), pct(l, 99), pct(l, 100));
  }
  if (rejected_rcpts > 0 || rejected_batches > 0 || (busy_batches > 0 && !o.retry_busy) ||
      bounced > 0) {
    exit_code = 1;
  }
  return exit_code;
}
