#include "engine/packed_gemm.h"

// GCC 12's AVX-512 intrinsics (reductions, conversions) read a deliberately undefined register
// (_mm512_undefined) and trip -Wuninitialized in its own header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/cpu_features.h"
#include "engine/tail_mask.h"

namespace rosetta {

namespace {

constexpr int kWidth = kPackedPanelWidth;  // two AVX-512 registers of 16 floats

// Tile heights. A pair of panels (64 columns, 4 registers) takes 6 rows: 24 accumulators, 4 panel
// loads and 6 broadcasts per k. A lone panel (the last one when their number is odd) takes 12 rows:
// 24 accumulators, 2 loads and 12 broadcasts per k. The 6x64 tile measured 5-10% faster than 12x32
// on the decoder and MiniLM shapes (fewer loads per FMA, 6 input rows streamed instead of 12).
constexpr int kPairRows = 6;
constexpr int kSingleRows = 12;

// Rows per unit of work: x rows [r, r + kBlockRows) are read once per pair of panels, and stay in
// L2 (1 MB) while a thread sweeps its panels when m is large (the encoder's 1024 rows).
constexpr int kBlockRows = 256;

// Chunks of units per thread in a multi-threaded call: enough for the threads to even out.
constexpr int kChunksPerThread = 8;
// From this many rows on, units are handed out in chunks (below, a static split: batch 1 greedy
// measured 0.86x with chunks, batch 32 beam 4 1.04x).
constexpr int kMinRowsForChunks = 16;

// What a tile does with its sums besides storing them: add the bias (null: none), and for int8
// first undo the quantization: y = (sum - column_offsets[j]) * row_scales[i] * column_scales[j].
// Pointers are at the tile's first row and column.
struct Epilogue {
  const float* bias = nullptr;
  const float* row_scales = nullptr;
  const float* column_scales = nullptr;
  const int32_t* column_offsets = nullptr;
};

// The accumulators of a tile start at the bias (or zero). Inlined into the kernels, so that the
// accumulators stay in registers.
template <int kRows, int kVecs>
__attribute__((target("avx512f"), always_inline)) inline void InitTile(__m512 (&acc)[kRows][kVecs],
                                                                       const float* bias) {
  for (int v = 0; v < kVecs; ++v) {
    const __m512 b = bias != nullptr ? _mm512_load_ps(bias + 16 * v) : _mm512_setzero_ps();
    for (int i = 0; i < kRows; ++i) acc[i][v] = b;
  }
}

// Writes a tile's first `columns` columns to y (rows ldy floats apart).
template <int kRows, int kVecs>
__attribute__((target("avx512f"), always_inline)) inline void StoreTile(
    const __m512 (&acc)[kRows][kVecs], float* y, int64_t ldy, int columns) {
  if (columns >= 16 * kVecs) {
    for (int i = 0; i < kRows; ++i) {
      for (int v = 0; v < kVecs; ++v) _mm512_storeu_ps(y + i * ldy + 16 * v, acc[i][v]);
    }
    return;
  }
  for (int v = 0; v < kVecs; ++v) {
    const __mmask16 mask = TailMask(columns - 16 * v);
    for (int i = 0; i < kRows; ++i) _mm512_mask_storeu_ps(y + i * ldy + 16 * v, mask, acc[i][v]);
  }
}

// y[kRows x 16 kPanels * 2] = bias + x[kRows x k] W^T over kPanels (1 or 2) consecutive panels,
// `panel_stride` floats apart. x is read in place (row i at x + i * ldx): no copy of the input.
// Only the first `columns` columns are written.
template <int kRows, int kPanels>
__attribute__((target("avx512f,fma"))) void Kernel(const float* x, int64_t ldx, const float* panel,
                                                   int64_t panel_stride, int k, const Epilogue& e,
                                                   float* y, int64_t ldy, int columns) {
  constexpr int kVecs = 2 * kPanels;
  __m512 acc[kRows][kVecs];
  InitTile(acc, e.bias);
  const float* panel1 = panel + panel_stride;
  for (int kk = 0; kk < k; ++kk) {
    __m512 b[kVecs];
    b[0] = _mm512_load_ps(panel + kk * kWidth);
    b[1] = _mm512_load_ps(panel + kk * kWidth + 16);
    if constexpr (kPanels == 2) {
      b[2] = _mm512_load_ps(panel1 + kk * kWidth);
      b[3] = _mm512_load_ps(panel1 + kk * kWidth + 16);
    }
    // Explicit unrolling keeps the accumulators in registers whatever the optimisation level.
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const __m512 a = _mm512_set1_ps(x[i * ldx + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
    }
  }
  StoreTile(acc, y, ldy, columns);
}

// The same tile with bfloat16: x holds pairs of bfloat16 inputs (row i at x + i * ldx, k_pairs of
// them), the panels pairs of bfloat16 weights; each dot-product instruction adds two products per
// column to the float32 sums.
template <int kRows, int kPanels>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void KernelBf16(
    const uint32_t* x, int64_t ldx, const uint16_t* panel, int64_t panel_stride, int k_pairs,
    const Epilogue& e, float* y, int64_t ldy, int columns) {
  constexpr int kVecs = 2 * kPanels;
  __m512 acc[kRows][kVecs];
  InitTile(acc, e.bias);
  const uint16_t* panel1 = panel + panel_stride;
  for (int kk = 0; kk < k_pairs; ++kk) {
    __m512bh b[kVecs];
    b[0] = (__m512bh)_mm512_load_si512(panel + kk * 2 * kWidth);
    b[1] = (__m512bh)_mm512_load_si512(panel + kk * 2 * kWidth + 32);
    if constexpr (kPanels == 2) {
      b[2] = (__m512bh)_mm512_load_si512(panel1 + kk * 2 * kWidth);
      b[3] = (__m512bh)_mm512_load_si512(panel1 + kk * 2 * kWidth + 32);
    }
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[i * ldx + kk]));
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
    }
  }
  StoreTile(acc, y, ldy, columns);
}

// Rows [begin, end) of x [rows x k] to pairs of bfloat16 (nearest, ties to even; what the dot
// products multiply), zero past k: out row i at out + i * ldo, ldo >= ceil(k / 32) * 16.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void RowsToBf16(const float* x, int64_t ldx,
                                                                       int begin, int end, int k,
                                                                       uint32_t* out, int64_t ldo) {
  for (int i = begin; i < end; ++i) {
    const float* row = x + i * ldx;
    uint32_t* pairs = out + i * ldo;
    for (int c = 0; c < k; c += 32) {
      const int left = k - c;
      const __m512 a = _mm512_maskz_loadu_ps(TailMask(left), row + c);
      const __m512 b = _mm512_maskz_loadu_ps(TailMask(left - 16), row + c + 16);
      _mm512_storeu_si512(pairs + c / 2, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
}

// The same tile with int8: x holds quads of unsigned bytes (each input quantized to int8 for its
// row, plus 128), the panels quads of int8 weights; each VNNI instruction adds four products per
// column to the int32 sums, which the epilogue turns back into floats.
template <int kRows, int kPanels>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void KernelInt8(
    const uint32_t* x, int64_t ldx, const int8_t* panel, int64_t panel_stride, int k_quads,
    const Epilogue& e, float* y, int64_t ldy, int columns) {
  constexpr int kVecs = 2 * kPanels;
  // Every loop over the tile is unrolled, so that the sums stay in registers.
  __v16si sums[kRows][kVecs];
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVecs; ++v) sums[i][v] = __v16si{};
  }
  const int8_t* panel1 = panel + panel_stride;
  for (int kk = 0; kk < k_quads; ++kk) {
    __v16si b[kVecs];
    b[0] = (__v16si)_mm512_load_si512(panel + kk * 4 * kWidth);
    b[1] = (__v16si)_mm512_load_si512(panel + kk * 4 * kWidth + 64);
    if constexpr (kPanels == 2) {
      b[2] = (__v16si)_mm512_load_si512(panel1 + kk * 4 * kWidth);
      b[3] = (__v16si)_mm512_load_si512(panel1 + kk * 4 * kWidth + 64);
    }
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const __v16si a = (__v16si)_mm512_set1_epi32(static_cast<int>(x[i * ldx + kk]));
      // The builtin on GCC's own vector type: through _mm512_dpbusd_epi32's casts GCC 12 copies
      // the sums and stores them to the stack at every step (half the speed).
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) {
        sums[i][v] = __builtin_ia32_vpdpbusd_v16si(sums[i][v], a, b[v]);
      }
    }
  }
  __m512 acc[kRows][kVecs];
#pragma GCC unroll 4
  for (int v = 0; v < kVecs; ++v) {
    const __m512i offset = _mm512_loadu_si512(e.column_offsets + 16 * v);
    const __m512 scale = _mm512_loadu_ps(e.column_scales + 16 * v);
    const __m512 bias = e.bias != nullptr ? _mm512_load_ps(e.bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const __m512 value = _mm512_cvtepi32_ps(_mm512_sub_epi32((__m512i)sums[i][v], offset));
      acc[i][v] =
          _mm512_fmadd_ps(value, _mm512_mul_ps(scale, _mm512_set1_ps(e.row_scales[i])), bias);
    }
  }
  StoreTile(acc, y, ldy, columns);
}

// The int8 quantization of a row of inputs or a column of weights whose largest |value| is
// max_abs: the values times `inverse`, rounded, are the int8 values, which times `scale` give the
// values back. All zeros, or too small to scale (under about 4e-37): scale 1, inverse 0, zeros. A
// NaN or an infinity among the values (`finite` false): scale NaN, so that the outputs are NaN,
// as in float32.
struct Int8Scale {
  float scale;
  float inverse;
};

Int8Scale ScaleFor(float max_abs, bool finite) {
  if (!finite || !std::isfinite(max_abs)) return {std::numeric_limits<float>::quiet_NaN(), 0.0f};
  const float inverse = max_abs > 0 ? 127.0f / max_abs : 0.0f;
  if (inverse == 0.0f || !std::isfinite(inverse)) return {1.0f, 0.0f};
  return {max_abs / 127.0f, inverse};
}

// Rows [begin, end) of x [rows x k] quantized to int8 per row (scale: the row's largest |x| / 127,
// rounded to nearest even), stored plus 128 as unsigned bytes, 128 past k: out row i at
// out + i * ldo (in quads), ldo >= ceil(k / 64) * 16; the scales (ScaleFor) go to row_scales[i].
__attribute__((target("avx512f,avx512bw"))) void RowsToInt8(const float* x, int64_t ldx, int begin,
                                                            int end, int k, uint32_t* out,
                                                            int64_t ldo, float* row_scales) {
  for (int i = begin; i < end; ++i) {
    const float* row = x + i * ldx;
    __m512 largest = _mm512_setzero_ps();
    __mmask16 nan = 0;  // max_ps drops NaNs: they are looked for separately
    for (int c = 0; c < k; c += 16) {
      const __m512 values = _mm512_maskz_loadu_ps(TailMask(k - c), row + c);
      largest = _mm512_max_ps(largest, _mm512_abs_ps(values));
      nan |= _mm512_cmp_ps_mask(values, values, _CMP_UNORD_Q);
    }
    const Int8Scale s = ScaleFor(_mm512_reduce_max_ps(largest), nan == 0);
    row_scales[i] = s.scale;
    const __m512 inverses = _mm512_set1_ps(s.inverse);
    uint8_t* bytes = reinterpret_cast<uint8_t*>(out + i * ldo);
    for (int c = 0; c < ldo * 4; c += 16) {
      __m512i q = _mm512_cvtps_epi32(
          _mm512_mul_ps(_mm512_maskz_loadu_ps(TailMask(k - c), row + c), inverses));
      q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes + c),
                       _mm512_cvtepi32_epi8(_mm512_add_epi32(q, _mm512_set1_epi32(128))));
    }
  }
}

template <typename In, typename Weight>
using KernelFn = void (*)(const In*, int64_t, const Weight*, int64_t, int, const Epilogue&, float*,
                          int64_t, int);

// kKernels<kPanels>[rows]: the kernel for tiles of `rows` rows (index 0 unused).
template <int kPanels, int... kRows>
constexpr std::array<KernelFn<float, float>, sizeof...(kRows) + 1> MakeKernels(
    std::integer_sequence<int, kRows...>) {
  return {nullptr, &Kernel<kRows + 1, kPanels>...};
}
template <int kPanels, int... kRows>
constexpr std::array<KernelFn<uint32_t, uint16_t>, sizeof...(kRows) + 1> MakeBf16Kernels(
    std::integer_sequence<int, kRows...>) {
  return {nullptr, &KernelBf16<kRows + 1, kPanels>...};
}
template <int kPanels, int... kRows>
constexpr std::array<KernelFn<uint32_t, int8_t>, sizeof...(kRows) + 1> MakeInt8Kernels(
    std::integer_sequence<int, kRows...>) {
  return {nullptr, &KernelInt8<kRows + 1, kPanels>...};
}
constexpr auto kPairKernels = MakeKernels<2>(std::make_integer_sequence<int, kPairRows>());
constexpr auto kSingleKernels = MakeKernels<1>(std::make_integer_sequence<int, kSingleRows>());
constexpr auto kPairBf16Kernels = MakeBf16Kernels<2>(std::make_integer_sequence<int, kPairRows>());
constexpr auto kSingleBf16Kernels =
    MakeBf16Kernels<1>(std::make_integer_sequence<int, kSingleRows>());
constexpr auto kPairInt8Kernels = MakeInt8Kernels<2>(std::make_integer_sequence<int, kPairRows>());
constexpr auto kSingleInt8Kernels =
    MakeInt8Kernels<1>(std::make_integer_sequence<int, kSingleRows>());

// The inputs and weights of one call in the kernels' types: float32 as they are, bfloat16 as
// pairs, int8 as quads with a scale per row of x. `depth` counts the kernel's steps over k (k, or
// its pairs or quads).
template <typename In, typename Weight>
struct Operands {
  const In* x;
  int64_t ldx;
  const float* row_scales;  // int8 only
  const Weight* data;
  int depth;
  const std::array<KernelFn<In, Weight>, kPairRows + 1>& pair_kernels;
  const std::array<KernelFn<In, Weight>, kSingleRows + 1>& single_kernels;
};

// y rows [row_begin, row_end) x the columns of panels [panel_begin, panel_end) (1 or 2 panels).
template <typename In, typename Weight>
void RunUnit(const Operands<In, Weight>& in, const PackedWeights& w, float* y, int ldy,
             int row_begin, int row_end, int panel_begin, int panel_end) {
  const int64_t panel_stride = static_cast<int64_t>(in.depth) * kWidth *
                               static_cast<int64_t>(sizeof(float) / sizeof(Weight));
  const int64_t first_column = static_cast<int64_t>(panel_begin) * kWidth;
  const bool pair = panel_end - panel_begin == 2;
  const int max_rows = pair ? kPairRows : kSingleRows;
  const Weight* panel = in.data + panel_begin * panel_stride;
  Epilogue e;
  e.bias = w.bias.empty() ? nullptr : w.bias.data() + first_column;
  if (!w.column_scales.empty()) {
    e.column_scales = w.column_scales.data() + first_column;
    e.column_offsets = w.column_offsets.data() + first_column;
  }
  const int columns = std::min((panel_end - panel_begin) * kWidth, w.n - panel_begin * kWidth);
  // Tiles as even as possible (32 rows: 6+6+5+5+5+5, not 6+6+6+6+6+2): a short tile wastes FMA
  // latency slots.
  const int tiles = (row_end - row_begin + max_rows - 1) / max_rows;
  int row = row_begin;
  for (int t = 0; t < tiles; ++t) {
    const int rows = (row_end - row + (tiles - t) - 1) / (tiles - t);
    const KernelFn<In, Weight> kernel = pair ? in.pair_kernels[rows] : in.single_kernels[rows];
    if (in.row_scales != nullptr) e.row_scales = in.row_scales + row;
    kernel(in.x + static_cast<int64_t>(row) * in.ldx, in.ldx, panel, panel_stride, in.depth, e,
           y + static_cast<int64_t>(row) * ldy + first_column, ldy, columns);
    row += rows;
  }
}

// Asks for transparent huge pages on the 2 MiB pages inside [p, p + bytes), before they are
// first touched: every decoder step streams all the weights, and 4 KiB pages cost a TLB miss per
// 4 KiB. Only advice: without transparent huge pages nothing changes.
void AdviseHugePages(void* p, size_t bytes) {
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

// y = x W^T (+ bias) over all rows and panels, split across the pool's threads.
template <typename In, typename Weight>
void Multiply(const Operands<In, Weight>& in, int m, const PackedWeights& w, float* y, int ldy,
              ThreadPool* pool) {
  // Units of work: a block of rows times a pair of panels (the last pair may be a single panel).
  const int row_blocks = (m + kBlockRows - 1) / kBlockRows;
  const int pairs = (w.panels + 1) / 2;
  const int units = row_blocks * pairs;
  auto run = [&](int begin, int end) {
    for (int u = begin; u < end; ++u) {
      const int block = u / pairs;
      const int pair = u % pairs;
      RunUnit(in, w, y, ldy, block * kBlockRows, std::min(m, (block + 1) * kBlockRows), 2 * pair,
              std::min(w.panels, 2 * pair + 2));
    }
  };
  if (pool == nullptr || pool->num_threads() == 1) {
    run(0, units);
    return;
  }
  if (m < kMinRowsForChunks) {
    // Few rows: the weights' memory traffic dominates, and contiguous halves stream best.
    pool->ParallelFor(units, run);
    return;
  }
  // Each thread takes chunks of units in order from a shared counter until none are left, so a
  // thread that the machine slows down (a shared VM) does less of the work instead of holding
  // the other back. Chunks of several units keep each thread's weight reads sequential; handing
  // units out one at a time measured 0.6x-0.8x as fast at m <= 128 on 2 threads.
  const int threads = pool->num_threads();
  const int chunk = std::max(1, units / (threads * kChunksPerThread));
  std::atomic<int> next{0};
  pool->ParallelFor(threads, [&](int, int) {
    for (;;) {
      const int begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= units) break;
      run(begin, std::min(units, begin + chunk));
    }
  });
}

}  // namespace

absl::string_view ComputeTypeName(ComputeType type) {
  switch (type) {
    case ComputeType::kBfloat16:
      return "bfloat16";
    case ComputeType::kInt8:
      return "int8";
    default:
      return "float32";
  }
}

absl::StatusOr<ComputeType> ParseComputeType(absl::string_view name) {
  if (name == "float32") return ComputeType::kFloat32;
  if (name == "bfloat16") return ComputeType::kBfloat16;
  if (name == "int8") return ComputeType::kInt8;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compute type \"", name, "\" (float32, bfloat16 or int8)"));
}

bool AbslParseFlag(absl::string_view text, ComputeType* type, std::string* error) {
  absl::StatusOr<ComputeType> parsed = ParseComputeType(text);
  if (!parsed.ok()) {
    *error = std::string(parsed.status().message());
    return false;
  }
  *type = *parsed;
  return true;
}

std::string AbslUnparseFlag(ComputeType type) { return std::string(ComputeTypeName(type)); }

bool PackedGemmSupported() { return UseAvx512(); }

namespace {

// The flag /proc/cpuinfo shows for the instruction set a compute type needs beyond AVX-512F.
const char* CpuinfoFlag(ComputeType type) {
  return type == ComputeType::kBfloat16 ? "avx512_bf16" : "avx512_vnni";
}

bool CpuRuns(ComputeType type) {
  if (type == ComputeType::kFloat32) return true;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
         (type == ComputeType::kBfloat16 ? __builtin_cpu_supports("avx512bf16")
                                         : __builtin_cpu_supports("avx512vnni")) != 0;
}

}  // namespace

bool PackedBfloat16Supported() {
  static const bool has = CpuRuns(ComputeType::kBfloat16);
  return has && UseAvx512();
}

bool PackedInt8Supported() {
  static const bool has = CpuRuns(ComputeType::kInt8);
  return has && UseAvx512();
}

absl::Status CheckComputeType(ComputeType type) {
  if (type == ComputeType::kFloat32) return absl::OkStatus();
  if (type == ComputeType::kBfloat16 ? PackedBfloat16Supported() : PackedInt8Supported()) {
    return absl::OkStatus();
  }
  const std::string what = absl::StrCat("compute type ", ComputeTypeName(type), " needs ");
  const std::string extra = type == ComputeType::kBfloat16 ? "AVX512_BF16" : "AVX512_VNNI";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, "AVX-512F and ", extra, "; this CPU has neither (use float32)"));
  }
  if (!CpuRuns(type)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, extra, " (", CpuinfoFlag(type),
        " in /proc/cpuinfo, with avx512bw), which this CPU lacks; it has AVX-512F (use float32)"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat(what, "the AVX-512 kernels, which were turned off (ForcePortableKernels)"));
}

PackedWeights PackWeights(const float* w, const float* bias, int n, int k) {
  PackedWeights packed;
  packed.n = n;
  packed.k = k;
  packed.panels = (n + kWidth - 1) / kWidth;
  const size_t floats = static_cast<size_t>(packed.panels) * k * kWidth;
  packed.data.reserve(floats);
  AdviseHugePages(packed.data.data(), floats * sizeof(float));
  packed.data.assign(floats, 0.0f);
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

uint16_t ToBfloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays NaN
  }
  // As the instructions do: denormals flush to zero, the rest rounds to nearest, ties to even.
  if ((bits & 0x7f800000u) == 0) return static_cast<uint16_t>((bits >> 16) & 0x8000);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

// One panel of float32 values (k rows of kWidth) as bfloat16 pairs (ceil(k / 2) rows of kWidth
// pairs, zero past k); `to` starts zeroed.
void PanelToBfloat16(const float* from, int k, uint16_t* to) {
  for (int kk = 0; kk < k; ++kk) {
    for (int j = 0; j < kWidth; ++j) {
      to[(static_cast<size_t>(kk / 2) * kWidth + j) * 2 + kk % 2] =
          ToBfloat16(from[static_cast<size_t>(kk) * kWidth + j]);
    }
  }
}

// One panel of float32 values as int8 quads (ceil(k / 4) rows of kWidth quads, zero past k), with
// each column's scale and weight sum times 128 (kWidth of each); `to` starts zeroed.
void PanelToInt8(const float* from, int k, int8_t* to, float* scales, int32_t* offsets) {
  for (int j = 0; j < kWidth; ++j) {
    float max_abs = 0;
    bool finite = true;
    for (int kk = 0; kk < k; ++kk) {
      const float value = from[static_cast<size_t>(kk) * kWidth + j];
      finite = finite && std::isfinite(value);
      max_abs = std::max(max_abs, std::abs(value));
    }
    const Int8Scale s = ScaleFor(max_abs, finite);
    int32_t sum = 0;
    for (int kk = 0; kk < k; ++kk) {
      const float q = std::nearbyint(from[static_cast<size_t>(kk) * kWidth + j] * s.inverse);
      const int8_t value = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
      to[(static_cast<size_t>(kk / 4) * kWidth + j) * 4 + kk % 4] = value;
      sum += value;
    }
    scales[j] = s.scale;
    offsets[j] = 128 * sum;
  }
}

// Room for `type`'s panels of `w` (w.panels and w.k set), zeroed, huge pages advised.
void AllocateReducedPanels(PackedWeights& w, ComputeType type) {
  if (type == ComputeType::kBfloat16) {
    const size_t values = static_cast<size_t>(w.panels) * ((w.k + 1) / 2) * 2 * kWidth;
    w.data_bf16.reserve(values);
    AdviseHugePages(w.data_bf16.data(), values * sizeof(uint16_t));
    w.data_bf16.assign(values, 0);
  } else {
    const size_t values = static_cast<size_t>(w.panels) * ((w.k + 3) / 4) * 4 * kWidth;
    w.data_int8.reserve(values);
    AdviseHugePages(w.data_int8.data(), values);
    w.data_int8.assign(values, 0);
    w.column_scales.assign(static_cast<size_t>(w.panels) * kWidth, 1.0f);
    w.column_offsets.assign(static_cast<size_t>(w.panels) * kWidth, 0);
  }
  w.type = type;
}

// Panel p of float32 values into `type`'s layout in w. REQUIRES: AllocateReducedPanels(w, type).
void ConvertPanel(const float* from, int p, PackedWeights& w) {
  if (w.type == ComputeType::kBfloat16) {
    const size_t k_pairs = (w.k + 1) / 2;
    PanelToBfloat16(from, w.k, w.data_bf16.data() + p * k_pairs * 2 * kWidth);
  } else {
    const size_t k_quads = (w.k + 3) / 4;
    const size_t column = static_cast<size_t>(p) * kWidth;
    PanelToInt8(from, w.k, w.data_int8.data() + p * k_quads * 4 * kWidth,
                w.column_scales.data() + column, w.column_offsets.data() + column);
  }
}

void ConvertPanels(PackedWeights& w, ComputeType type) {
  AllocateReducedPanels(w, type);
  for (int p = 0; p < w.panels; ++p) {
    ConvertPanel(w.data.data() + static_cast<size_t>(p) * w.k * kWidth, p, w);
  }
  w.data = AlignedVector<float>();
}

}  // namespace

void ConvertToBfloat16(PackedWeights& w) { ConvertPanels(w, ComputeType::kBfloat16); }

void ConvertToInt8(PackedWeights& w) { ConvertPanels(w, ComputeType::kInt8); }

PackedWeights PackWeights(const float* w, const float* bias, int n, int k, ComputeType type) {
  if (type == ComputeType::kFloat32) return PackWeights(w, bias, n, k);
  PackedWeights packed;
  packed.n = n;
  packed.k = k;
  packed.panels = (n + kWidth - 1) / kWidth;
  AllocateReducedPanels(packed, type);
  // One float32 panel at a time: no float32 copy of the whole matrix besides `w`.
  AlignedVector<float> panel(static_cast<size_t>(k) * kWidth);
  for (int p = 0; p < packed.panels; ++p) {
    std::fill(panel.begin(), panel.end(), 0.0f);
    for (int j = 0; j < kWidth && p * kWidth + j < n; ++j) {
      const float* row = w + static_cast<size_t>(p * kWidth + j) * k;
      for (int kk = 0; kk < k; ++kk) panel[static_cast<size_t>(kk) * kWidth + j] = row[kk];
    }
    ConvertPanel(panel.data(), p, packed);
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
  if (w.type == ComputeType::kFloat32) {
    const Operands<float, float> in{x,   ldx,          nullptr,       w.data.data(),
                                    w.k, kPairKernels, kSingleKernels};
    return Multiply(in, m, w, y, ldy, pool);
  }
  // The inputs in the kernel's type (pairs of bfloat16, quads of bytes with a scale per row), in
  // buffers of this thread's that grow to the largest call, converted by the pool's threads when
  // there are enough rows.
  const bool int8 = w.type == ComputeType::kInt8;
  const int group = int8 ? 4 : 2;
  const int depth = (w.k + group - 1) / group;
  const int64_t ld = (static_cast<int64_t>(depth) + 15) / 16 * 16;
  thread_local AlignedVector<uint32_t> groups;
  thread_local AlignedVector<float> scales;
  if (groups.size() < static_cast<size_t>(m * ld)) groups.resize(m * ld);
  if (int8 && scales.size() < static_cast<size_t>(m)) scales.resize(m);
  uint32_t* const groups_data = groups.data();
  float* const scales_data = int8 ? scales.data() : nullptr;
  auto convert = [&](int begin, int end) {
    if (int8) {
      RowsToInt8(x, ldx, begin, end, w.k, groups_data, ld, scales_data);
    } else {
      RowsToBf16(x, ldx, begin, end, w.k, groups_data, ld);
    }
  };
  if (pool != nullptr && pool->num_threads() > 1 && m >= kMinRowsForChunks) {
    pool->ParallelFor(m, convert);
  } else {
    convert(0, m);
  }
  if (int8) {
    const Operands<uint32_t, int8_t> in{groups_data,        ld,    scales_data,
                                        w.data_int8.data(), depth, kPairInt8Kernels,
                                        kSingleInt8Kernels};
    return Multiply(in, m, w, y, ldy, pool);
  }
  const Operands<uint32_t, uint16_t> in{
      groups_data, ld, nullptr, w.data_bf16.data(), depth, kPairBf16Kernels, kSingleBf16Kernels};
  Multiply(in, m, w, y, ldy, pool);
}

}  // namespace rosetta
