// deliver.cc — ringmail from C++: start an engine from TOML, submit one
// batch, wait for every recipient's final event, stop.
//
//   deliver HOST:PORT
//
// Every recipient's mail goes to the SMTP server at HOST:PORT (a test sink,
// say). Exits 0 when the three valid recipients were delivered and the
// invalid one was refused in the acknowledgement.
//
// Build against an installed ringmail:
//   c++ -std=c++20 deliver.cc $(pkg-config --cflags --libs ringmail) -o deliver
#include <ringmail/ringmail.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>

namespace {

/// Final events per recipient, filled by the shard threads.
class Outcomes {
 public:
  void add(const ringmail::EventView& e) {
    std::lock_guard lock(mu_);
    std::cout << "event " << e.json << '\n';
    if (e.type == ringmail::EventType::kDelivered) {
      ++delivered_;
    } else if (e.type != ringmail::EventType::kDeferred) {
      ++other_finals_;
    }
    cv_.notify_all();
  }
  /// Waits until `n` recipients are final, or `timeout` passes.
  bool wait(unsigned n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return delivered_ + other_finals_ >= n; });
  }
  unsigned delivered() {
    std::lock_guard lock(mu_);
    return delivered_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned delivered_ = 0;
  unsigned other_finals_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " HOST:PORT\n";
    return 2;
  }
  std::cout << "ringmail " << ringmail_version() << " (headers " << RINGMAIL_VERSION_STRING
            << ")\n";

  // Outlives the engine: callbacks may run until shutdown returns.
  Outcomes outcomes;

  // No socket, no event file, no spool: everything goes through this API.
  auto config = ringmail::Config::parse(std::string("[ingest]\nsocket = \"\"\n"
                                                    "[events]\nfile = \"\"\n"
                                                    "[spool]\nmode = \"off\"\n"
                                                    "[engine]\nshards = 2\n"
                                                    "[routing]\ndefault = \"") +
                                        argv[1] + "\"\n");
  if (!config) {
    std::cerr << "configuration: " << config.error().message << '\n';
    return 1;
  }
  std::cout << "route " << config->default_route() << '\n';
  auto engine = ringmail::Engine::start(std::move(*config));
  if (!engine) {
    std::cerr << "cannot start: " << engine.error().message << '\n';
    return 1;
  }

  (*engine)->subscribe([&outcomes](const ringmail::EventView& e) { outcomes.add(e); });

  ringmail::Batch batch;
  batch.batch_id = "cpp-example";
  batch.sender = "news@example.com";
  batch.message =
      "From: <news@example.com>\r\n"
      "To: <undisclosed-recipients:;>\r\n"
      "Subject: hello from C++\r\n"
      "\r\n"
      "Sent through libringmail.\r\n";
  batch.recipients = {"alice@example.org", "bob@example.net", "not an address",
                      "carol@example.com"};
  ringmail::Ack ack = (*engine)->submit(batch);
  std::cout << "ack " << ack.batch_id << ": " << ringmail::to_string(ack.status) << ", accepted "
            << ack.accepted << '\n';
  for (const auto& r : ack.rejections) {
    std::cout << "rejected recipient " << r.index << " (" << ringmail::to_string(r.reason)
              << "): " << r.text << '\n';
  }
  const bool ack_ok = ack.status == ringmail::AckStatus::kAccepted && ack.accepted == 3 &&
                      ack.rejections.size() == 1 && ack.rejections[0].index == 2;

  const bool final = outcomes.wait(ack.accepted, std::chrono::seconds(30));
  ringmail::Stats stats = (*engine)->stats();
  std::cout << "stats: delivered " << stats.delivered << ", transactions " << stats.transactions
            << '\n';
  (*engine)->shutdown(std::chrono::seconds(0));

  std::cout << "delivered " << outcomes.delivered() << '\n';
  return ack_ok && final && outcomes.delivered() == 3 ? 0 : 1;
}
