// Linear layers of a decoder step: OpenBLAS sgemm (weights repacked per call) against the packed
// kernel (weights packed once), for the transformer-base shapes and a range of row counts.
//
//   gemm_bench [--benchmark_filter=...]   (reports GFLOP/s as the "FLOPS" counter)
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/blas.h"
#include "engine/packed_gemm.h"
#include "engine/thread_pool.h"

namespace {

struct Shapes {
  std::vector<float> x, w, b, y;
};

Shapes MakeShapes(int m, int n, int k) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  Shapes s;
  s.x.resize(static_cast<size_t>(m) * k);
  s.w.resize(static_cast<size_t>(n) * k);
  s.b.resize(n);
  s.y.resize(static_cast<size_t>(m) * n);
  for (float& v : s.x) v = d(rng);
  for (float& v : s.w) v = d(rng);
  for (float& v : s.b) v = d(rng);
  return s;
}

void SetCounters(benchmark::State& state, int m, int n, int k) {
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_OpenBlas(benchmark::State& state) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  rosetta::SetBlasThreads(2);
  Shapes s = MakeShapes(m, n, k);
  for (auto _ : state) {
    rosetta::Gemm(false, true, m, n, k, 1.0f, s.x.data(), k, s.w.data(), k, 0.0f, s.y.data(), n);
    benchmark::DoNotOptimize(s.y.data());
  }
  SetCounters(state, m, n, k);
}

void BM_Packed(benchmark::State& state) {
  const int m = state.range(0), n = state.range(1), k = state.range(2);
  static rosetta::ThreadPool pool(2);
  Shapes s = MakeShapes(m, n, k);
  rosetta::PackedWeights packed = rosetta::PackWeights(s.w.data(), s.b.data(), n, k);
  for (auto _ : state) {
    rosetta::PackedLinear(s.x.data(), m, k, packed, s.y.data(), n, &pool);
    benchmark::DoNotOptimize(s.y.data());
  }
  SetCounters(state, m, n, k);
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int m : {1, 8, 32, 128, 512}) {
    for (auto [n, k] : {std::pair{1536, 512}, {512, 512}, {2048, 512}, {512, 2048}, {32000, 512}}) {
      b->Args({m, n, k});
    }
  }
  b->ArgNames({"m", "n", "k"})->UseRealTime();
}

BENCHMARK(BM_OpenBlas)->Apply(Shapes);
BENCHMARK(BM_Packed)->Apply(Shapes);

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
