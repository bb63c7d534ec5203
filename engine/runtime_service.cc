// runtime_service.cc — what the Runtime offers a process running it as a
// service: reopening the event file for log rotation, and the shards'
// signs of life for a watchdog (Engine::reopen_event_file,
// Engine::loop_iterations).
#include <atomic>

#include "engine/log.h"
#include "engine/runtime.h"

namespace ringmail::engine {
namespace {

/// One reopen across the shards. Each shard switches files, then reports
/// once its lines for the old file are written; the last report answers.
struct ReopenCall {
  std::function<void(std::string)> done;
  int from_shard;
  std::string path;
  std::atomic<uint32_t> pending;
};

void reopen_answer(std::unique_ptr<ReopenCall> call) {
  RM_LOG_INFO("event file reopened: %s", call->path.c_str());
  call->done("");
}

void reopen_answer_msg(Shard& /*shard*/, void* p, uint64_t /*a*/) {
  reopen_answer(std::unique_ptr<ReopenCall>(static_cast<ReopenCall*>(p)));
}

/// On `shard`, from its EventLog: its lines for the old file are written.
void reopen_written(Shard& shard, ReopenCall* call) {
  if (call->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) {
    return;
  }
  if (call->from_shard >= 0 && static_cast<uint32_t>(call->from_shard) != shard.id()) {
    shard.post(static_cast<uint32_t>(call->from_shard), ShardMsg{&reopen_answer_msg, call, 0});
    return;
  }
  reopen_answer(std::unique_ptr<ReopenCall>(call));
}

}  // namespace

void Runtime::reopen_event_file(int from_shard, std::function<void(std::string)> done) {
  if (config_.events.file.empty()) {
    done("");
    return;
  }
  if (!accepting()) {
    done("ringmail is stopping");
    return;
  }
  std::unique_lock lock(event_file_mu_);
  auto file = EventFile::open(config_.events.file);
  if (!file.ok()) {
    lock.unlock();
    RM_LOG_ERROR("%s (events keep going to the file open before)", file.error().message.c_str());
    done(file.error().message);
    return;
  }
  event_file_ = std::move(*file);
  auto* call = new ReopenCall{std::move(done), from_shard, config_.events.file, shard_count()};
  // Under the lock and through each shard's one external queue: every
  // shard sees concurrent reopens in the same order and ends on the file
  // opened last.
  for (uint32_t i = 0; i < shard_count(); ++i) {
    post_external(i, [call, f = event_file_](Shard& s) {
      s.event_log().reopen(f, [call, &s] { reopen_written(s, call); });
    });
  }
}

std::vector<uint64_t> Runtime::loop_iterations() {
  std::vector<uint64_t> out;
  out.reserve(shards_.size());
  for (auto& s : shards_) {
    out.push_back(s->loop_iterations());
    s->wake();
  }
  return out;
}

}  // namespace ringmail::engine
