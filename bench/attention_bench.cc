// Attention kernels at the shapes of a decoder step and of short encoder blocks:
//
//   attention_bench [--benchmark_filter=...]
//
// - CrossAttention/keys:K/rows:R: AttendTransposed, R query rows of one sentence (greedy: 1; beam
//   search: the beam size) against its K precomputed source keys and values, 8 heads of 64
//   (transformer-base), as each decoder layer runs it per sentence and step.
// - SelfAttentionRow/keys:K: AttendRow, one beam's query against its K cached keys.
// - EncoderBlock/tokens:T: AttendBlock over a T-token sentence, 12 heads of 32 (MiniLM).
// Times are per call; on a shared machine compare builds by ratios, run side by side.
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/attention.h"

namespace {

using rosetta::AttentionShape;

std::vector<float> Random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

void CrossAttention(benchmark::State& state) {
  const int keys = static_cast<int>(state.range(0));
  const int rows = static_cast<int>(state.range(1));
  const AttentionShape shape{8, 64, 0.125f};
  const int d = shape.num_heads * shape.head_dim;
  const int ldkt = rosetta::TransposedKeyStride(keys);
  const std::vector<float> q = Random(static_cast<size_t>(rows) * d, 1);
  const std::vector<float> k = Random(static_cast<size_t>(keys) * d, 2);
  const std::vector<float> v = Random(static_cast<size_t>(keys) * d, 3);
  std::vector<float> kt(static_cast<size_t>(d) * ldkt);
  rosetta::TransposeKeys(k.data(), d, keys, d, kt.data(), ldkt);
  std::vector<float> scratch(rosetta::AttendTransposedScratchFloats(keys));
  std::vector<float> out(static_cast<size_t>(rows) * d);
  for (auto _ : state) {
    rosetta::AttendTransposed(q.data(), d, rows, kt.data(), ldkt, keys, v.data(), d, shape,
                              scratch.data(), out.data(), d);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(CrossAttention)->ArgNames({"keys", "rows"})->ArgsProduct({{8, 25, 64}, {1, 2, 4}});

void SelfAttentionRow(benchmark::State& state) {
  const int keys = static_cast<int>(state.range(0));
  const AttentionShape shape{8, 64, 0.125f};
  const int d = shape.num_heads * shape.head_dim;
  // Cached keys and values interleaved, as rows of a paged cache are.
  const std::vector<float> q = Random(d, 1);
  const std::vector<float> cache = Random(static_cast<size_t>(keys) * 2 * d, 2);
  std::vector<const float*> key_rows(keys), value_rows(keys);
  for (int j = 0; j < keys; ++j) {
    key_rows[j] = cache.data() + static_cast<size_t>(j) * 2 * d;
    value_rows[j] = key_rows[j] + d;
  }
  std::vector<float> scores(keys), out(d);
  for (auto _ : state) {
    rosetta::AttendRow(q.data(), key_rows.data(), value_rows.data(), keys, shape, scores.data(),
                       out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(SelfAttentionRow)->ArgName("keys")->Arg(8)->Arg(25)->Arg(64);

void EncoderBlock(benchmark::State& state) {
  const int tokens = static_cast<int>(state.range(0));
  const AttentionShape shape{12, 32, 1.0f / 5.656854f};
  const int d = shape.num_heads * shape.head_dim;
  const std::vector<float> qkv = Random(static_cast<size_t>(tokens) * 3 * d, 1);
  std::vector<float> out(static_cast<size_t>(tokens) * d);
  std::vector<float> scratch(rosetta::AttendBlockScratchFloats(tokens, tokens, shape));
  rosetta::BlockAttentionArgs args;
  args.q = qkv.data();
  args.k = qkv.data() + d;
  args.v = qkv.data() + 2 * d;
  args.ldq = args.ldk = args.ldv = 3 * d;
  args.out = out.data();
  args.ldo = d;
  args.tq = args.tk = args.key_length = tokens;
  for (auto _ : state) {
    rosetta::AttendBlock(args, shape, scratch.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(EncoderBlock)->ArgName("tokens")->Arg(12)->Arg(28)->Arg(128);

}  // namespace

BENCHMARK_MAIN();
