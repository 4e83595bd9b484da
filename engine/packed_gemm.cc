#include "engine/packed_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace rosetta {

namespace {

constexpr int kWidth = kPackedPanelWidth;  // two AVX-512 registers of 16 floats
// Rows per kernel call: 12 rows x 2 registers = 24 accumulators of the 32 AVX-512 registers.
constexpr int kMaxRows = 12;

// `a` is a tile of kRows input rows packed column by column: a[kk * kRows + i] = x[i][kk].
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

// Packs the rows of x in tiles of kMaxRows (the last one shorter), column by column, so the kernel
// reads its inputs as one sequential stream. Tile t starts at t * kMaxRows * k.
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

void RunPanels(const float* packed_x, int m, const PackedWeights& w, float* y, int ldy,
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

}  // namespace

bool PackedGemmSupported() { return __builtin_cpu_supports("avx512f"); }

PackedWeights PackWeights(const float* w, const float* bias, int n, int k) {
  PackedWeights packed;
  packed.n = n;
  packed.k = k;
  packed.panels = (n + kWidth - 1) / kWidth;
  packed.data.assign(static_cast<size_t>(packed.panels) * k * kWidth, 0.0f);
  for (int col = 0; col < n; ++col) {
    const int p = col / kWidth;
    const int j = col % kWidth;
    float* panel = packed.data.data() + static_cast<size_t>(p) * k * kWidth;
    const float* row = w + static_cast<size_t>(col) * k;
    for (int kk = 0; kk < k; ++kk) panel[static_cast<size_t>(kk) * kWidth + j] = row[kk];
  }
  if (bias != nullptr) {
    packed.bias.assign(static_cast<size_t>(packed.panels) * kWidth, 0.0f);
    std::memcpy(packed.bias.data(), bias, sizeof(float) * n);
  }
  return packed;
}

void PackedLinear(const float* x, int m, int ldx, const PackedWeights& w, float* y, int ldy,
                  ThreadPool* pool) {
  if (m <= 0) return;
  // Thread-local so that concurrent callers (one per model worker) never share it.
  thread_local AlignedVector<float> packed_x;
  if (packed_x.size() < static_cast<size_t>(m) * w.k) packed_x.resize(static_cast<size_t>(m) * w.k);
  PackRows(x, m, ldx, w.k, packed_x.data());
  const float* a = packed_x.data();
  if (pool == nullptr || pool->num_threads() == 1) {
    RunPanels(a, m, w, y, ldy, 0, w.panels);
    return;
  }
  pool->ParallelFor(w.panels, [&](int begin, int end) { RunPanels(a, m, w, y, ldy, begin, end); });
}

}  // namespace rosetta
