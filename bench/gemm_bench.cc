// Linear layers of a decoder step and of the MiniLM encoder: OpenBLAS sgemm (weights repacked per
// call) against the packed kernel (weights packed once), and against the packed kernel as it was
// before the rewrite of 2026-11 ("baseline", a copy kept here so that both run side by side on the
// same noisy machine).
//
//   gemm_bench [--benchmark_filter=...]   (reports GFLOP/s as the "FLOPS" counter)
//
// Benchmarks are registered shape by shape (OpenBLAS, baseline, packed for one shape, then the next
// shape), so that the three figures of a row are measured close together in time. For medians on a
// shared machine: --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// --benchmark_enable_random_interleaving=true.
#include <immintrin.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/blas.h"
#include "engine/packed_gemm.h"
#include "engine/thread_pool.h"

namespace {

// The packed kernel before the rewrite: x repacked single-threaded into tiles of 12 rows, then a
// 12x32 kernel per (panel, tile), panels split across the pool. Same weight layout as now.
namespace baseline {

constexpr int kWidth = rosetta::kPackedPanelWidth;
constexpr int kMaxRows = 12;

template <int kRows>
__attribute__((target("avx512f,fma"))) void Kernel(const float* a, const float* panel, int k,
                                                   const float* bias, float* y, int ldy,
                                                   int columns) {
  __m512 acc0[kRows];
  __m512 acc1[kRows];
  const __m512 bias0 = bias != nullptr ? _mm512_load_ps(bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias != nullptr ? _mm512_load_ps(bias + 16) : _mm512_setzero_ps();
  for (int i = 0; i < kRows; ++i) {
    acc0[i] = bias0;
    acc1[i] = bias1;
  }
  for (int kk = 0; kk < k; ++kk) {
    const __m512 b0 = _mm512_load_ps(panel + kk * kWidth);
    const __m512 b1 = _mm512_load_ps(panel + kk * kWidth + 16);
    for (int i = 0; i < kRows; ++i) {
      const __m512 x = _mm512_set1_ps(a[kk * kRows + i]);
      acc0[i] = _mm512_fmadd_ps(x, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(x, b1, acc1[i]);
    }
  }
  if (columns == kWidth) {
    for (int i = 0; i < kRows; ++i) {
      _mm512_storeu_ps(y + i * ldy, acc0[i]);
      _mm512_storeu_ps(y + i * ldy + 16, acc1[i]);
    }
  } else {
    const __mmask16 mask0 = static_cast<__mmask16>(columns >= 16 ? 0xffff : (1u << columns) - 1);
    const __mmask16 mask1 = static_cast<__mmask16>(
        columns <= 16 ? 0 : (columns >= 32 ? 0xffff : (1u << (columns - 16)) - 1));
    for (int i = 0; i < kRows; ++i) {
      _mm512_mask_storeu_ps(y + i * ldy, mask0, acc0[i]);
      _mm512_mask_storeu_ps(y + i * ldy + 16, mask1, acc1[i]);
    }
  }
}

using KernelFn = void (*)(const float*, const float*, int, const float*, float*, int, int);

constexpr KernelFn kKernels[kMaxRows + 1] = {
    nullptr,    &Kernel<1>, &Kernel<2>, &Kernel<3>,  &Kernel<4>,  &Kernel<5>, &Kernel<6>,
    &Kernel<7>, &Kernel<8>, &Kernel<9>, &Kernel<10>, &Kernel<11>, &Kernel<12>};

void PackRows(const float* x, int m, int ldx, int k, float* packed) {
  for (int row = 0; row < m; row += kMaxRows) {
    const int rows = std::min(kMaxRows, m - row);
    float* tile = packed + static_cast<size_t>(row) * k;
    for (int i = 0; i < rows; ++i) {
      const float* src = x + static_cast<size_t>(row + i) * ldx;
      for (int kk = 0; kk < k; ++kk) tile[kk * rows + i] = src[kk];
    }
  }
}

void RunPanels(const float* packed_x, int m, const rosetta::PackedWeights& w, float* y, int ldy,
               int first_panel, int end_panel) {
  for (int p = first_panel; p < end_panel; ++p) {
    const float* panel = w.data.data() + static_cast<size_t>(p) * w.k * kWidth;
    const float* bias = w.bias.empty() ? nullptr : w.bias.data() + static_cast<size_t>(p) * kWidth;
    const int columns = std::min(kWidth, w.n - p * kWidth);
    for (int row = 0; row < m; row += kMaxRows) {
      const int rows = std::min(kMaxRows, m - row);
      kKernels[rows](packed_x + static_cast<size_t>(row) * w.k, panel, w.k, bias,
                     y + static_cast<size_t>(row) * ldy + p * kWidth, ldy, columns);
    }
  }
}

void PackedLinear(const float* x, int m, int ldx, const rosetta::PackedWeights& w, float* y,
                  int ldy, rosetta::ThreadPool* pool) {
  if (m <= 0) return;
  thread_local rosetta::AlignedVector<float> packed_x;
  if (packed_x.size() < static_cast<size_t>(m) * w.k) packed_x.resize(static_cast<size_t>(m) * w.k);
  PackRows(x, m, ldx, w.k, packed_x.data());
  const float* a = packed_x.data();
  if (pool == nullptr || pool->num_threads() == 1) {
    RunPanels(a, m, w, y, ldy, 0, w.panels);
    return;
  }
  pool->ParallelFor(w.panels, [&](int begin, int end) { RunPanels(a, m, w, y, ldy, begin, end); });
}

}  // namespace baseline

struct Operands {
  std::vector<float> x, w, b, y;
};

Operands MakeOperands(int m, int n, int k) {
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  Operands s;
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

// One pool per thread count, shared by every benchmark (as the engine shares one per worker).
rosetta::ThreadPool* Pool(int threads) {
  static rosetta::ThreadPool one(1);
  static rosetta::ThreadPool two(2);
  return threads == 1 ? &one : &two;
}

struct Shape {
  int m, n, k, threads;
};

void BM_OpenBlas(benchmark::State& state, Shape shape) {
  const auto [m, n, k, threads] = shape;
  rosetta::SetBlasThreads(threads);
  Operands s = MakeOperands(m, n, k);
  for (auto _ : state) {
    rosetta::Gemm(false, true, m, n, k, 1.0f, s.x.data(), k, s.w.data(), k, 0.0f, s.y.data(), n);
    benchmark::DoNotOptimize(s.y.data());
  }
  SetCounters(state, m, n, k);
}

// Marks the benchmark skipped on CPUs where the packed kernel cannot run.
bool SkippedWithoutPackedKernel(benchmark::State& state,
                                rosetta::ComputeType type = rosetta::ComputeType::kFloat32) {
  const absl::Status supported = rosetta::CheckComputeType(type);
  if (rosetta::PackedGemmSupported() && supported.ok()) return false;
  state.SkipWithError(supported.ok() ? "the packed kernel needs AVX-512"
                                     : std::string(supported.message()).c_str());
  return true;
}

rosetta::PackedWeights Pack(const Operands& s, int n, int k, rosetta::ComputeType type) {
  rosetta::PackedWeights packed = rosetta::PackWeights(s.w.data(), s.b.data(), n, k);
  if (type == rosetta::ComputeType::kBfloat16) rosetta::ConvertToBfloat16(packed);
  if (type == rosetta::ComputeType::kInt8) rosetta::ConvertToInt8(packed);
  return packed;
}

template <auto kLinear>
void BM_PackedKernel(benchmark::State& state, Shape shape, rosetta::ComputeType type) {
  if (SkippedWithoutPackedKernel(state, type)) return;
  const auto [m, n, k, threads] = shape;
  rosetta::ThreadPool* pool = Pool(threads);
  Operands s = MakeOperands(m, n, k);
  const rosetta::PackedWeights packed = Pack(s, n, k, type);
  for (auto _ : state) {
    kLinear(s.x.data(), m, k, packed, s.y.data(), n, pool);
    benchmark::DoNotOptimize(s.y.data());
  }
  SetCounters(state, m, n, k);
}

// As BM_PackedKernel, but each call uses the next of several copies of the weights, together
// larger than the L3 cache: in a decoder step every layer's weights have been evicted by the
// other layers' since their last use, so they come from memory, not cache.
void BM_PackedCold(benchmark::State& state, Shape shape, rosetta::ComputeType type) {
  if (SkippedWithoutPackedKernel(state, type)) return;
  const auto [m, n, k, threads] = shape;
  rosetta::ThreadPool* pool = Pool(threads);
  Operands s = MakeOperands(m, n, k);
  constexpr int64_t kColdBytes = int64_t{96} << 20;  // 3x a 32 MiB L3
  const int bytes_per_weight = type == rosetta::ComputeType::kFloat32    ? 4
                               : type == rosetta::ComputeType::kBfloat16 ? 2
                                                                         : 1;
  const int64_t bytes = static_cast<int64_t>(n) * k * bytes_per_weight;
  const int copies = static_cast<int>(std::max<int64_t>(2, (kColdBytes + bytes - 1) / bytes));
  std::vector<rosetta::PackedWeights> packed;
  for (int c = 0; c < copies; ++c) packed.push_back(Pack(s, n, k, type));
  int next = 0;
  for (auto _ : state) {
    rosetta::PackedLinear(s.x.data(), m, k, packed[next], s.y.data(), n, pool);
    benchmark::DoNotOptimize(s.y.data());
    next = (next + 1) % copies;
  }
  SetCounters(state, m, n, k);
}

std::vector<Shape> AllShapes() {
  std::vector<Shape> shapes;
  // Transformer-base (translation): decoder steps of 1 to 256 rows (batch 32 x beam 4 = 128; the
  // daemon runs about 16).
  const std::pair<int, int> base[] = {
      {1536, 512}, {512, 512}, {2048, 512}, {512, 2048}, {32000, 512}};
  for (int m : {1, 4, 8, 16, 32, 128, 256}) {
    for (auto [n, k] : base) shapes.push_back({m, n, k, 2});
  }
  // MiniLM (embeddings): one text of 32 tokens, 32 texts of 32 tokens.
  const std::pair<int, int> minilm[] = {{1152, 384}, {384, 384}, {1536, 384}, {384, 1536}};
  for (int m : {32, 1024}) {
    for (auto [n, k] : minilm) shapes.push_back({m, n, k, 2});
  }
  // Single-threaded, to separate the kernel from the thread split.
  for (auto [n, k] : base) shapes.push_back({128, n, k, 1});
  // Decoder steps past 256 rows (64 sentences x beam 5, 128 x 4), single-threaded as the engine
  // runs OpenBLAS there (each of its threads multiplies a slice of the columns).
  for (int m : {320, 512, 1024}) {
    for (auto [n, k] : base) shapes.push_back({m, n, k, 1});
  }
  for (auto [n, k] : minilm) shapes.push_back({1024, n, k, 1});
  return shapes;
}

void RegisterAll() {
  for (const Shape& s : AllShapes()) {
    const std::string suffix = "/m:" + std::to_string(s.m) + "/n:" + std::to_string(s.n) +
                               "/k:" + std::to_string(s.k) +
                               "/threads:" + std::to_string(s.threads);
    benchmark::RegisterBenchmark(("OpenBlas" + suffix).c_str(), BM_OpenBlas, s)->UseRealTime();
    benchmark::RegisterBenchmark(("Baseline" + suffix).c_str(),
                                 BM_PackedKernel<&baseline::PackedLinear>, s,
                                 rosetta::ComputeType::kFloat32)
        ->UseRealTime();
    for (rosetta::ComputeType type :
         {rosetta::ComputeType::kFloat32, rosetta::ComputeType::kBfloat16,
          rosetta::ComputeType::kInt8}) {
      const std::string name = type == rosetta::ComputeType::kBfloat16 ? "PackedBf16"
                               : type == rosetta::ComputeType::kInt8   ? "PackedInt8"
                                                                       : "Packed";
      benchmark::RegisterBenchmark((name + suffix).c_str(), BM_PackedKernel<&rosetta::PackedLinear>,
                                   s, type)
          ->UseRealTime();
      benchmark::RegisterBenchmark((name + "Cold" + suffix).c_str(), BM_PackedCold, s, type)
          ->UseRealTime();
    }
  }
  // The machine's speed at the moment: OpenBLAS sgemm at 2048^3 on 2 threads, the figure the
  // project's notes quote for this CPU (bench/compare_translation.py measures it next to its runs,
  // so that results from different days can be set side by side).
  benchmark::RegisterBenchmark("OpenBlas/m:2048/n:2048/k:2048/threads:2", BM_OpenBlas,
                               Shape{2048, 2048, 2048, 2})
      ->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  benchmark::Initialize(&argc, argv);
  RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
