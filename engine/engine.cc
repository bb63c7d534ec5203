#include "engine/ringmail.h"

#include "engine/log.h"
#include "engine/runtime.h"
#include "engine/spool.h"

#include <future>

namespace ringmail {

Result<std::unique_ptr<Engine>> Engine::start(engine::Config config, const engine::Clock* clock) {
  // Before the shards start, so their first lines already obey it.
  if (auto level = engine::parse_log_level(config.log_level)) {
    engine::set_log_level(*level);
  }
  auto rt = engine::Runtime::start(std::move(config), clock);
  if (!rt.ok()) {
    return std::move(rt).take_error();
  }
  return std::unique_ptr<Engine>(new Engine(std::move(*rt)));
}

Engine::Engine(std::unique_ptr<engine::Runtime> rt) : rt_(std::move(rt)) {}

Engine::~Engine() {
  rt_->shutdown(std::chrono::milliseconds(0));
}

proto::Ack Engine::submit(const Batch& batch) {
  engine::BatchInput in;
  in.batch_id = batch.batch_id;
  in.sender = batch.sender;
  in.message = batch.message;
  in.recipients.reserve(batch.recipients.size());
  for (const auto& r : batch.recipients) {
    in.recipients.push_back(r);
  }
  std::string pool_opt;
  if (!batch.pool.empty()) {
    pool_opt = "pool=" + batch.pool;
    in.options.push_back(pool_opt);
  }
  for (const auto& o : batch.options) {
    in.options.push_back(o);
  }
  in.recipient_vars.assign(batch.recipient_vars.begin(), batch.recipient_vars.end());
  in.unsubscribed.assign(batch.unsubscribed.begin(), batch.unsubscribed.end());
  return rt_->accept_batch(in, -1);
}

uint64_t Engine::subscribe(EventCallback callback) {
  return rt_->subscribe(std::move(callback));
}

void Engine::unsubscribe(uint64_t id) {
  rt_->unsubscribe(id);
}

bool Engine::drain(std::chrono::milliseconds timeout) {
  return rt_->wait_idle(timeout);
}

void Engine::shutdown(std::chrono::milliseconds grace) {
  rt_->shutdown(grace);
}

Stats Engine::stats() const {
  auto t = rt_->totals();
  Stats s;
  s.delivered = t.delivered;
  s.deferred = t.deferred;
  s.bounced = t.bounced;
  s.unfinished = t.unfinished;
  s.connections_opened = t.connections_opened;
  s.transactions = t.transactions;
  s.unknown_outcomes = t.unknown_outcomes;
  s.dropped = t.dropped;
  s.queued_bytes = t.queued_bytes;
  s.spool_damage = t.spool_damage;
  s.spool_segments = t.spool_segments;
  s.spool_errors = t.spool_errors;
  s.submission_auth_checks = t.submission_auth_checks;
  s.submission_reclaimed = t.submission_reclaimed;
  s.submission_timeouts = t.submission_timeouts;
  return s;
}

const engine::Config& Engine::config() const {
  return rt_->config();
}

std::string Engine::control(std::string_view command) {
  auto reply = std::make_shared<std::promise<std::string>>();
  auto fut = reply->get_future();
  rt_->control(command, -1, [reply](std::string json) { reply->set_value(std::move(json)); });
  return fut.get();
}

Result<void> Engine::reopen_event_file() {
  auto reply = std::make_shared<std::promise<std::string>>();
  auto fut = reply->get_future();
  rt_->reopen_event_file(-1, [reply](std::string error) { reply->set_value(std::move(error)); });
  std::string error = fut.get();
  if (!error.empty()) {
    return make_error(Errc::kIo, error);
  }
  return ok_result();
}

std::vector<uint64_t> Engine::loop_iterations() {
  return rt_->loop_iterations();
}

void Engine::wake_for_test() {
  rt_->wake_all();
}

engine::SpoolFaults& Engine::spool_faults_for_test() {
  return engine::SpoolFaults::instance();
}

}  // namespace ringmail
