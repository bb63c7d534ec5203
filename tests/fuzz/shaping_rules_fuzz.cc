// Provider shaping rules (engine/provider_rules.h): the fuzz bytes are a
// rules file in KumoMTA's shaping.toml shape, loaded after ringmail's
// built-in rules as [provider_shaping] files would be.
// Properties:
//   - no crash, no escaping exception, no hang on any text (toml++ and
//     regex errors come back as a Result naming the file and block);
//   - loading is deterministic;
//   - loaded rules only produce limits within the documented ranges, and
//     every automation rule has a positive duration and threshold; matching
//     any domain against any MX names stays within those invariants.
#include <string>

#include "engine/config.h"
#include "engine/provider_rules.h"
#include "tests/fuzz/fuzz_util.h"

using namespace ringmail;
using namespace ringmail::engine;

namespace {

void check(const ProviderRules& r) {
  const std::vector<std::string> hosts[] = {
      {}, {"mx.example.com"}, {"aspmx.l.google.com", "alt1.aspmx.l.google.com"}, {""}};
  for (const char* domain : {"example.com", "gmail.com", "", "x"}) {
    for (const auto& h : hosts) {
      ProviderRules::Match m = r.match(domain, h);
      const ShapingOverrides& o = m.limits;
      FUZZ_CHECK(!o.max_connections || (*o.max_connections >= 1 && *o.max_connections <= 10'000));
      FUZZ_CHECK(!o.max_msgs_per_conn || *o.max_msgs_per_conn >= 1);
      FUZZ_CHECK(!o.max_rcpts_per_txn ||
                 (*o.max_rcpts_per_txn >= 1 && *o.max_rcpts_per_txn <= 1000));
      FUZZ_CHECK(!o.msg_rate || o.msg_rate->per_second > 0);
      FUZZ_CHECK(!o.connect_rate || o.connect_rate->per_second > 0);
      (void)o.describe();
      for (const AutomationRule* a : m.automation) {
        FUZZ_CHECK(a->duration.count() > 0);
        FUZZ_CHECK(a->threshold >= 1);
        FUZZ_CHECK(a->threshold == 1 || a->window.count() > 0);
        FUZZ_CHECK(a->action != AutomationAction::kSetConfig || !a->set.empty());
        FUZZ_CHECK(!a->pattern.empty());
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) {
    return 0;  // rules files are small; std::regex on huge patterns is slow, not wrong
  }
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::pair<std::string, std::string>> texts = {
      {"builtin", std::string(builtin_shaping_rules())}, {"fuzz.toml", text}};
  auto a = ProviderRules::parse(texts);
  auto b = ProviderRules::parse(texts);
  FUZZ_CHECK(a.ok() == b.ok());
  if (!a.ok()) {
    FUZZ_CHECK(a.error().message == b.error().message);
    return 0;
  }
  check(**a);
  return 0;
}
