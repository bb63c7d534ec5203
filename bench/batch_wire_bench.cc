// Batch protocol codec: decoding a batch is on the ingest hot path.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "proto/batch_wire.h"

namespace ringmail::proto {
namespace {

std::string make_batch_payload(size_t recipients, std::vector<std::string>* storage) {
  storage->clear();
  for (size_t i = 0; i < recipients; ++i) {
    storage->push_back("user" + std::to_string(i) + "@example" + std::to_string(i % 50) + ".com");
  }
  BatchView b;
  b.batch_id = "campaign-2026-11-26-000042";
  b.sender = "bounces@sender.example";
  b.has_sender = true;
  static const std::string kMessage(20 * 1024, 'm');
  b.message = kMessage;
  for (const std::string& r : *storage) {
    b.recipients.push_back(r);
  }
  b.options = {"campaign=42", "tenant=7"};
  std::string payload;
  encode_batch(payload, b);
  return payload;
}

void BM_DecodeBatch(benchmark::State& state) {
  std::vector<std::string> storage;
  const std::string payload = make_batch_payload(static_cast<size_t>(state.range(0)), &storage);
  for (auto _ : state) {
    Result<BatchView> b = decode_batch(payload, BatchLimits{});
    benchmark::DoNotOptimize(b.ok());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * state.range(0)));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * payload.size()));
}
BENCHMARK(BM_DecodeBatch)->Arg(1)->Arg(100)->Arg(10000);

void BM_EncodeBatch(benchmark::State& state) {
  std::vector<std::string> storage;
  const std::string payload = make_batch_payload(static_cast<size_t>(state.range(0)), &storage);
  Result<BatchView> b = decode_batch(payload, BatchLimits{});
  std::string out;
  for (auto _ : state) {
    out.clear();
    encode_batch(out, *b);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * payload.size()));
}
BENCHMARK(BM_EncodeBatch)->Arg(100)->Arg(10000);

void BM_AckRoundTrip(benchmark::State& state) {
  Ack a;
  a.seq = 123456789;
  a.batch_id = "campaign-2026-11-26-000042";
  a.accepted = 98;
  a.rejections = {{3, RejectReason::kInvalidAddress, "missing @"},
                  {77, RejectReason::kSuppressed, ""}};
  std::string out;
  for (auto _ : state) {
    out.clear();
    encode_ack(out, a);
    Result<Ack> d = decode_ack(out);
    benchmark::DoNotOptimize(d.ok());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_AckRoundTrip);

}  // namespace
}  // namespace ringmail::proto
