// Configuration loading: the fuzz bytes are a TOML file an operator (or a
// configuration-management template gone wrong) hands to ringmaild. It is
// read over the built-in default, as ringmaild does.
// Properties:
//   - no crash, no escaping exception, no hang on any text (toml++ errors
//     and every range check come back as a Result naming the key);
//   - loading is deterministic: the same text gives the same outcome;
//   - a loaded Config holds the invariants the engine relies on without
//     re-checking them: documented ranges, non-empty retry schedule and
//     egress sources/pools, pool and source indexes in range, a valid EHLO
//     name, and shaping_for / route_for / pool_for answer for any domain.
#include <string>

#include "engine/config.h"
#include "proto/address.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::engine;

namespace {

void check_timeouts(const SmtpTimeouts& t) {
  for (Millis m : {t.connect, t.greeting, t.ehlo, t.mail, t.rcpt, t.data_init, t.data_block,
                   t.data_done, t.rset, t.quit, t.idle}) {
    FUZZ_CHECK(m.count() > 0);
  }
}

void check_shaping(const Shaping& s) {
  FUZZ_CHECK(s.max_rcpts_per_txn >= 1 && s.max_rcpts_per_txn <= 1000);
  FUZZ_CHECK(s.max_connections >= 1);
  FUZZ_CHECK(s.max_msgs_per_conn >= 1);
  FUZZ_CHECK(!s.retry_schedule.empty());
  for (Millis m : s.retry_schedule) {
    FUZZ_CHECK(m.count() > 0);
  }
  FUZZ_CHECK(s.backoff.count() >= 0 && s.max_age.count() >= 0);
}

void check(const Config& c) {
  FUZZ_CHECK(c.engine.ring_entries >= 64 && c.engine.ring_entries <= 32768);
  FUZZ_CHECK(c.ingest.max_frame_bytes > 0 && c.ingest.max_message_bytes > 0);
  FUZZ_CHECK(c.ingest.max_recipients >= 1 && c.ingest.max_connections >= 1);
  FUZZ_CHECK(c.ingest.frame_timeout.count() > 0);
  check_timeouts(c.delivery.timeouts);
  FUZZ_CHECK(!c.delivery.ehlo_name.empty());
  FUZZ_CHECK(proto::validate_domain(c.delivery.ehlo_name).ok() ||
             c.delivery.ehlo_name == "localhost");
  FUZZ_CHECK(!c.retry.schedule.empty());
  for (Millis m : c.retry.schedule) {
    FUZZ_CHECK(m.count() > 0);
  }
  FUZZ_CHECK(c.retry.jitter_percent <= 100);
  FUZZ_CHECK(!c.egress.sources.empty() && !c.egress.pools.empty());
  FUZZ_CHECK(c.egress.default_pool < c.egress.pools.size());
  for (const PoolConfig& p : c.egress.pools) {
    FUZZ_CHECK(!p.sources.empty());
    for (uint32_t s : p.sources) {
      FUZZ_CHECK(s < c.egress.sources.size());
    }
  }
  for (const PoolRule& r : c.egress.rules) {
    FUZZ_CHECK(r.pool < c.egress.pools.size());
  }
  FUZZ_CHECK(!c.submission.hostname.empty());
  for (const char* d : {"example.com", "a.example.com", "x", ""}) {
    check_shaping(c.shaping_for(d));
    (void)c.routing.route_for(d).describe();
    auto p = c.egress.pool_for("", d);
    FUZZ_CHECK(!p || *p < c.egress.pools.size());
  }
  for (const ShapingRule& r : c.shaping) {
    check_shaping(c.shaping_for(r.match));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // TOML documents are text; keep inputs small enough that one run is quick.
  if (size > 16 * 1024) {
    return 0;
  }
  std::string_view toml(reinterpret_cast<const char*>(data), size);
  Result<Config> c = parse_config(toml, "fuzz.toml");
  Result<Config> again = parse_config(toml, "fuzz.toml");
  FUZZ_CHECK(c.ok() == again.ok());
  if (!c.ok()) {
    FUZZ_CHECK(!c.error().message.empty());
    FUZZ_CHECK(c.error().message == again.error().message);
    return 0;
  }
  check(*c);
  return 0;
}
