#include "engine/packed_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

// y = x W^T + b in double precision.
std::vector<double> Naive(const std::vector<float>& x, int m, int ldx, const std::vector<float>& w,
                          const std::vector<float>& b, int n, int k) {
  std::vector<double> y(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = b.empty() ? 0.0 : b[j];
      for (int kk = 0; kk < k; ++kk) sum += static_cast<double>(x[i * ldx + kk]) * w[j * k + kk];
      y[static_cast<size_t>(i) * n + j] = sum;
    }
  }
  return y;
}

struct Case {
  int m, n, k;
};

float FromBfloat16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

std::vector<float> RoundedToBfloat16(std::vector<float> v) {
  for (float& f : v) f = FromBfloat16(ToBfloat16(f));
  return v;
}

// What the int8 kernel multiplies: W's values as ConvertToInt8 quantized them (read back from the
// panels), and x's rows quantized as PackedLinear does (scale: the row's largest |value| / 127).
std::vector<float> DequantizedInt8Weights(const PackedWeights& packed) {
  const int n = packed.n, k = packed.k, k_quads = (k + 3) / 4;
  std::vector<float> w(static_cast<size_t>(n) * k);
  for (int col = 0; col < n; ++col) {
    const int p = col / kPackedPanelWidth, j = col % kPackedPanelWidth;
    const int8_t* panel =
        packed.data_int8.data() + static_cast<size_t>(p) * k_quads * 4 * kPackedPanelWidth;
    for (int kk = 0; kk < k; ++kk) {
      w[static_cast<size_t>(col) * k + kk] =
          panel[(static_cast<size_t>(kk / 4) * kPackedPanelWidth + j) * 4 + kk % 4] *
          packed.column_scales[col];
    }
  }
  return w;
}

std::vector<float> QuantizedRows(std::vector<float> x, int m, int ldx, int k) {
  for (int i = 0; i < m; ++i) {
    float* row = x.data() + static_cast<size_t>(i) * ldx;
    float max_abs = 0;
    for (int kk = 0; kk < k; ++kk) max_abs = std::max(max_abs, std::abs(row[kk]));
    const float scale = max_abs > 0 ? max_abs / 127.0f : 1.0f;
    const float inverse = max_abs > 0 ? 127.0f / max_abs : 0.0f;
    for (int kk = 0; kk < k; ++kk) {
      row[kk] = std::clamp(std::nearbyint(row[kk] * inverse), -127.0f, 127.0f) * scale;
    }
  }
  return x;
}

// Runs PackedLinear with x and y rows wider than k and n, y filled with NaN (every value must be
// written, none read before) and a sentinel past n (must stay untouched), and compares with Naive
// (for bfloat16, Naive of x and W rounded to bfloat16: the products are exact in float32, so only
// the float32 sums differ).
void ExpectMatchesNaive(const Case& c, bool with_bias, int ldx_extra, ThreadPool* pool,
                        std::mt19937& rng, ComputeType type = ComputeType::kFloat32) {
  const auto [m, n, k] = c;
  const int ldx = k + ldx_extra;
  const int ldy = n + 5;
  std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * ldx, rng);
  std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  std::vector<float> b = with_bias ? testing::RandomVector(n, rng) : std::vector<float>{};
  PackedWeights packed = PackWeights(w.data(), with_bias ? b.data() : nullptr, n, k);
  std::vector<double> expected;
  if (type == ComputeType::kBfloat16) {
    ConvertToBfloat16(packed);
    expected = Naive(RoundedToBfloat16(x), m, ldx, RoundedToBfloat16(w), b, n, k);
  } else if (type == ComputeType::kInt8) {
    ConvertToInt8(packed);
    expected = Naive(QuantizedRows(x, m, ldx, k), m, ldx, DequantizedInt8Weights(packed), b, n, k);
  } else {
    expected = Naive(x, m, ldx, w, b, n, k);
  }
  std::vector<float> y(static_cast<size_t>(m) * ldy);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < ldy; ++j) {
      y[static_cast<size_t>(i) * ldy + j] = j < n ? std::nanf("") : 1234.0f;
    }
  }
  PackedLinear(x.data(), m, ldx, packed, y.data(), ldy, pool);
  const int threads = pool == nullptr ? 0 : pool->num_threads();
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < ldy; ++j) {
      const float got = y[static_cast<size_t>(i) * ldy + j];
      if (j >= n) {
        ASSERT_EQ(got, 1234.0f) << "wrote past n at row " << i << " col " << j;
        continue;
      }
      const double want = expected[static_cast<size_t>(i) * n + j];
      ASSERT_NEAR(got, want, 1e-4 * (1.0 + std::abs(want)) * std::sqrt(k))
          << "m=" << m << " n=" << n << " k=" << k << " bias=" << with_bias << " ldx=" << ldx
          << " threads=" << threads << " " << ComputeTypeName(type) << " at " << i << "," << j;
    }
  }
}

void MatchesNaiveOverShapes(ComputeType type) {
  std::mt19937 rng(3);
  ThreadPool one(1);
  ThreadPool two(2);
  // Row counts around the tile heights (6 and 12) and small n: one panel, a partial panel, an odd
  // number of panels (the last one runs the 32-wide kernel), pairs of panels.
  for (int m : {1, 2, 5, 6, 7, 11, 12, 13, 25, 40}) {
    for (auto [n, k] : {std::pair{1, 1},
                        {16, 7},
                        {31, 33},
                        {32, 64},
                        {33, 5},
                        {64, 9},
                        {65, 17},
                        {100, 130},
                        {257, 64}}) {
      for (bool with_bias : {false, true}) {
        for (int ldx_extra : {0, 3}) {
          for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &one, &two}) {
            ExpectMatchesNaive({m, n, k}, with_bias, ldx_extra, pool, rng, type);
          }
        }
      }
    }
  }
}

TEST(PackedGemm, MatchesNaiveOverShapes) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "this CPU has no AVX-512";
  MatchesNaiveOverShapes(ComputeType::kFloat32);
}

TEST(PackedGemm, Bfloat16MatchesNaiveOverShapes) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  MatchesNaiveOverShapes(ComputeType::kBfloat16);
}

TEST(PackedGemm, Int8MatchesNaiveOverShapes) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  MatchesNaiveOverShapes(ComputeType::kInt8);
}

void MatchesNaiveAcrossBlocks(ComputeType type) {
  std::mt19937 rng(4);
  ThreadPool two(2);
  // m across the blocks of 256 rows, up to more than 1024 rows; larger k; n with a partial last
  // panel and an odd number of panels.
  for (const Case& c : std::vector<Case>{{3, 97, 255},
                                         {17, 64, 256},
                                         {30, 33, 257},
                                         {12, 130, 513},
                                         {128, 96, 600},
                                         {255, 65, 40},
                                         {256, 64, 300},
                                         {257, 100, 70},
                                         {600, 31, 260},
                                         {1025, 97, 33},
                                         {1100, 64, 520},
                                         {5, 40, 4100}}) {
    for (bool with_bias : {false, true}) {
      for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
        ExpectMatchesNaive(c, with_bias, /*ldx_extra=*/with_bias ? 5 : 0, pool, rng, type);
      }
    }
  }
}

TEST(PackedGemm, MatchesNaiveAcrossBlocks) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "this CPU has no AVX-512";
  MatchesNaiveAcrossBlocks(ComputeType::kFloat32);
}

TEST(PackedGemm, Bfloat16MatchesNaiveAcrossBlocks) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  MatchesNaiveAcrossBlocks(ComputeType::kBfloat16);
}

TEST(PackedGemm, Int8MatchesNaiveAcrossBlocks) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  MatchesNaiveAcrossBlocks(ComputeType::kInt8);
}

// Quantization error against float32: per-row and per-column int8 keeps y within a few percent of
// the largest |y| (random uniform values).
TEST(PackedGemm, Int8CloseToFloat32) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  std::mt19937 rng(8);
  const int m = 20, n = 96, k = 512;
  const std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * k, rng);
  const std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  const std::vector<double> exact = Naive(x, m, k, w, {}, n, k);
  PackedWeights packed = PackWeights(w.data(), nullptr, n, k);
  ConvertToInt8(packed);
  std::vector<float> y(static_cast<size_t>(m) * n);
  PackedLinear(x.data(), m, k, packed, y.data(), n, nullptr);
  double largest = 0, worst = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    largest = std::max(largest, std::abs(exact[i]));
    worst = std::max(worst, std::abs(y[i] - exact[i]));
  }
  EXPECT_LT(worst, 0.02 * largest);
  EXPECT_GT(worst, 0.0) << "no quantization happened";
}

// A row's result does not depend on the rows beside it (its tile, its block, the number of rows,
// the threads): the daemon batches different requests together and each must get the result it
// gets alone.
void RowsIndependentOfTheBatch(ComputeType type) {
  std::mt19937 rng(6);
  const int n = 130, k = 301, m = 300;
  const std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  PackedWeights packed = PackWeights(w.data(), nullptr, n, k);
  if (type == ComputeType::kBfloat16) ConvertToBfloat16(packed);
  if (type == ComputeType::kInt8) ConvertToInt8(packed);
  const std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * k, rng);
  ThreadPool two(2);
  std::vector<float> all(static_cast<size_t>(m) * n);
  PackedLinear(x.data(), m, k, packed, all.data(), n, &two);
  for (int i : {0, 5, 6, 17, 255, 256, 299}) {
    std::vector<float> alone(n);
    PackedLinear(x.data() + static_cast<size_t>(i) * k, 1, k, packed, alone.data(), n, nullptr);
    for (int j = 0; j < n; ++j) {
      ASSERT_EQ(alone[j], all[static_cast<size_t>(i) * n + j]) << "row " << i << " col " << j;
    }
  }
}

TEST(PackedGemm, Bfloat16RowsIndependentOfTheBatch) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  RowsIndependentOfTheBatch(ComputeType::kBfloat16);
}

TEST(PackedGemm, Int8RowsIndependentOfTheBatch) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  RowsIndependentOfTheBatch(ComputeType::kInt8);
}

TEST(PackedGemm, ToBfloat16RoundsToNearestEven) {
  auto bits = [](float f) { return ToBfloat16(f); };
  auto from_bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  };
  EXPECT_EQ(bits(1.0f), 0x3f80);
  EXPECT_EQ(bits(-2.0f), 0xc000);
  EXPECT_EQ(bits(from_bits(0x3f807fffu)), 0x3f80);  // below half: down
  EXPECT_EQ(bits(from_bits(0x3f808001u)), 0x3f81);  // above half: up
  EXPECT_EQ(bits(from_bits(0x3f808000u)), 0x3f80);  // a tie: to the even 0x3f80
  EXPECT_EQ(bits(from_bits(0x3f818000u)), 0x3f82);  // a tie: to the even 0x3f82
  EXPECT_EQ(bits(from_bits(0x7f7fffffu)), 0x7f80);  // the largest float rounds to infinity
  EXPECT_EQ(bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_TRUE(std::isnan(FromBfloat16(bits(std::nanf("")))));
  EXPECT_EQ(bits(from_bits(0x00000001u)), 0x0000);  // denormals flush to zero, as in the kernel
  EXPECT_EQ(bits(from_bits(0x80400000u)), 0x8000);
}

TEST(PackedGemm, ComputeTypeNames) {
  for (ComputeType type : {ComputeType::kFloat32, ComputeType::kBfloat16, ComputeType::kInt8}) {
    absl::StatusOr<ComputeType> parsed = ParseComputeType(ComputeTypeName(type));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, type);
  }
  absl::StatusOr<ComputeType> bad = ParseComputeType("int4");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), std::string::npos);
}

// Two model workers, each with its own pool, multiplying by the same weights at the same time
// (bfloat16: each with its own buffer of rounded inputs).
void ConcurrentCallersWithTheirOwnPools(ComputeType type) {
  std::mt19937 rng(5);
  const int m = 37, n = 200, k = 300;
  const std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  const std::vector<float> b = testing::RandomVector(n, rng);
  PackedWeights packed = PackWeights(w.data(), b.data(), n, k);
  if (type == ComputeType::kBfloat16) ConvertToBfloat16(packed);
  if (type == ComputeType::kInt8) ConvertToInt8(packed);
  std::vector<float> x[2];
  std::vector<float> expected[2];
  for (int t = 0; t < 2; ++t) {
    x[t] = testing::RandomVector(static_cast<size_t>(m) * k, rng);
    expected[t].resize(static_cast<size_t>(m) * n);
    PackedLinear(x[t].data(), m, k, packed, expected[t].data(), n, nullptr);
  }
  bool same[2] = {true, true};
  std::thread workers[2];
  for (int t = 0; t < 2; ++t) {
    workers[t] = std::thread([&, t] {
      ThreadPool pool(2);
      std::vector<float> y(static_cast<size_t>(m) * n);
      for (int repeat = 0; repeat < 50; ++repeat) {
        PackedLinear(x[t].data(), m, k, packed, y.data(), n, &pool);
        if (y != expected[t]) same[t] = false;
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  EXPECT_TRUE(same[0]);
  EXPECT_TRUE(same[1]);
}

TEST(PackedGemm, ConcurrentCallersWithTheirOwnPools) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "this CPU has no AVX-512";
  ConcurrentCallersWithTheirOwnPools(ComputeType::kFloat32);
}

TEST(PackedGemm, Bfloat16ConcurrentCallersWithTheirOwnPools) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ConcurrentCallersWithTheirOwnPools(ComputeType::kBfloat16);
}

TEST(PackedGemm, Int8ConcurrentCallersWithTheirOwnPools) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  ConcurrentCallersWithTheirOwnPools(ComputeType::kInt8);
}

TEST(PackedGemm, PackingLayout) {
  // W [3 x 2]: panel 0, row kk holds W[j][kk] for j < 3, zeros after.
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  const std::vector<float> b = {7, 8, 9};
  const PackedWeights packed = PackWeights(w.data(), b.data(), 3, 2);
  ASSERT_EQ(packed.panels, 1);
  EXPECT_EQ(packed.data[0], 1);
  EXPECT_EQ(packed.data[1], 3);
  EXPECT_EQ(packed.data[2], 5);
  EXPECT_EQ(packed.data[3], 0);
  EXPECT_EQ(packed.data[kPackedPanelWidth], 2);
  EXPECT_EQ(packed.data[kPackedPanelWidth + 2], 6);
  EXPECT_EQ(packed.bias[2], 9);
  EXPECT_EQ(packed.bias[3], 0);
}

TEST(PackedGemm, Int8PackingLayout) {
  // W [3 x 5], small integers: each column (output) gets its own scale, its largest |w| / 127;
  // quad row 0 holds W[j][0..3], quad row 1 W[j][4] and zeros; the offsets are 128 x the sums.
  const std::vector<float> w = {1, 2, 3, 4, 5, -10, 20, 30, 40, 50, 0, 0, 0, 0, 0};
  PackedWeights packed = PackWeights(w.data(), nullptr, 3, 5);
  ConvertToInt8(packed);
  EXPECT_EQ(packed.type, ComputeType::kInt8);
  EXPECT_TRUE(packed.data.empty());
  ASSERT_EQ(packed.data_int8.size(), static_cast<size_t>(2 * 4 * kPackedPanelWidth));
  auto at = [&](int quad_row, int j, int slot) {
    return static_cast<int>(packed.data_int8[(quad_row * kPackedPanelWidth + j) * 4 + slot]);
  };
  EXPECT_FLOAT_EQ(packed.column_scales[0], 5.0f / 127);
  EXPECT_FLOAT_EQ(packed.column_scales[1], 50.0f / 127);
  EXPECT_EQ(packed.column_scales[2], 1.0f);  // an all-zero column
  EXPECT_EQ(at(0, 0, 0), 25);                // round(1 * 127 / 5)
  EXPECT_EQ(at(0, 0, 3), 102);               // round(4 * 127 / 5)
  EXPECT_EQ(at(1, 0, 0), 127);
  EXPECT_EQ(at(1, 0, 1), 0);
  EXPECT_EQ(at(0, 1, 0), -25);  // round(-10 * 127 / 50)
  EXPECT_EQ(at(1, 1, 0), 127);
  EXPECT_EQ(at(0, 2, 2), 0);
  EXPECT_EQ(packed.column_offsets[0], 128 * (25 + 51 + 76 + 102 + 127));
  EXPECT_EQ(packed.column_offsets[2], 0);
}

// Each output column is quantized with its own scale: columns of very different sizes all keep
// their relative precision.
TEST(PackedGemm, Int8ScalesEachColumn) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  std::mt19937 rng(9);
  const int m = 7, n = 40, k = 300;
  const std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * k, rng);
  std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  for (int j = 0; j < n; ++j) {
    const float size = std::pow(10.0f, static_cast<float>(j % 7) - 3);  // 1e-3 .. 1e3
    for (int kk = 0; kk < k; ++kk) w[static_cast<size_t>(j) * k + kk] *= size;
  }
  const std::vector<double> exact = Naive(x, m, k, w, {}, n, k);
  PackedWeights packed = PackWeights(w.data(), nullptr, n, k);
  ConvertToInt8(packed);
  std::vector<float> y(static_cast<size_t>(m) * n);
  PackedLinear(x.data(), m, k, packed, y.data(), n, nullptr);
  for (int j = 0; j < n; ++j) {
    double largest = 0, worst = 0;
    for (int i = 0; i < m; ++i) {
      largest = std::max(largest, std::abs(exact[static_cast<size_t>(i) * n + j]));
      worst = std::max(worst, std::abs(y[static_cast<size_t>(i) * n + j] -
                                       exact[static_cast<size_t>(i) * n + j]));
    }
    EXPECT_LT(worst, 0.03 * largest) << "column " << j;
  }
}

// A row with a NaN or an infinity gives NaN outputs (as float32 gives NaN or infinities), and
// leaves the other rows as they are alone.
TEST(PackedGemm, Int8NonFiniteInputsStayInTheirRow) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  std::mt19937 rng(10);
  const int m = 4, n = 33, k = 50;
  std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * k, rng);
  const std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
  PackedWeights packed = PackWeights(w.data(), nullptr, n, k);
  ConvertToInt8(packed);
  std::vector<float> alone(n);
  PackedLinear(x.data() + 3 * k, 1, k, packed, alone.data(), n, nullptr);
  x[1 * k + 49] = std::nanf("");  // in the last, partial block of 16
  x[2 * k + 7] = std::numeric_limits<float>::infinity();
  std::vector<float> y(static_cast<size_t>(m) * n);
  PackedLinear(x.data(), m, k, packed, y.data(), n, nullptr);
  for (int j = 0; j < n; ++j) {
    EXPECT_TRUE(std::isfinite(y[j])) << j;
    EXPECT_TRUE(std::isnan(y[1 * n + j])) << j;
    EXPECT_TRUE(std::isnan(y[2 * n + j])) << j;
    EXPECT_EQ(y[3 * n + j], alone[j]) << j;
  }
}

TEST(PackedGemm, Bfloat16PackingLayout) {
  // W [3 x 3]: panel 0, pair row 0 holds (W[j][0], W[j][1]) for each j; pair row 1 holds
  // (W[j][2], 0); zeros past n. Small integers are exact in bfloat16.
  const std::vector<float> w = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  PackedWeights packed = PackWeights(w.data(), nullptr, 3, 3);
  ConvertToBfloat16(packed);
  EXPECT_EQ(packed.type, ComputeType::kBfloat16);
  EXPECT_TRUE(packed.data.empty());
  ASSERT_EQ(packed.data_bf16.size(), static_cast<size_t>(2 * 2 * kPackedPanelWidth));
  auto at = [&](int pair_row, int j, int half) {
    return FromBfloat16(packed.data_bf16[(pair_row * kPackedPanelWidth + j) * 2 + half]);
  };
  EXPECT_EQ(at(0, 0, 0), 1);
  EXPECT_EQ(at(0, 0, 1), 2);
  EXPECT_EQ(at(0, 1, 0), 4);
  EXPECT_EQ(at(0, 2, 1), 8);
  EXPECT_EQ(at(1, 0, 0), 3);
  EXPECT_EQ(at(1, 0, 1), 0);
  EXPECT_EQ(at(1, 2, 0), 9);
  EXPECT_EQ(at(0, 3, 0), 0);
}

// Packing straight into a reduced type gives what packing in float32 then converting gives, bit
// for bit: every panel, scale, weight sum and bias, for widths that end inside a panel, depths
// that end inside a pair or quad, several panels, with and without a bias, non-finite weights.
TEST(PackedGemm, PackingInATypeEqualsPackingThenConverting) {
  std::mt19937 rng(11);
  for (ComputeType type : {ComputeType::kBfloat16, ComputeType::kInt8}) {
    for (const auto& [n, k] :
         std::vector<std::pair<int, int>>{{1, 1}, {3, 5}, {32, 4}, {70, 33}, {97, 130}}) {
      for (bool with_bias : {false, true}) {
        SCOPED_TRACE(::testing::Message() << ComputeTypeName(type) << " n " << n << " k " << k
                                          << (with_bias ? " bias" : ""));
        std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
        if (n * k > 40) {
          w[7] = std::numeric_limits<float>::infinity();
          w[k + 3] = std::numeric_limits<float>::quiet_NaN();
          std::fill(w.begin() + 2 * k, w.begin() + 3 * k, 0.0f);  // a column of zeros
        }
        const std::vector<float> b = testing::RandomVector(n, rng);
        const float* bias = with_bias ? b.data() : nullptr;
        PackedWeights expected = PackWeights(w.data(), bias, n, k);
        if (type == ComputeType::kBfloat16) ConvertToBfloat16(expected);
        if (type == ComputeType::kInt8) ConvertToInt8(expected);
        const PackedWeights actual = PackWeights(w.data(), bias, n, k, type);
        EXPECT_EQ(actual.type, expected.type);
        EXPECT_EQ(actual.n, n);
        EXPECT_EQ(actual.k, k);
        EXPECT_EQ(actual.panels, expected.panels);
        EXPECT_TRUE(actual.data.empty());
        auto same_bytes = [](const auto& a, const auto& b) {
          return a.size() == b.size() &&
                 (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
        };
        EXPECT_TRUE(same_bytes(actual.data_bf16, expected.data_bf16));
        EXPECT_TRUE(same_bytes(actual.data_int8, expected.data_int8));
        EXPECT_TRUE(same_bytes(actual.column_scales, expected.column_scales));
        EXPECT_TRUE(same_bytes(actual.column_offsets, expected.column_offsets));
        EXPECT_TRUE(same_bytes(actual.bias, expected.bias));
        EXPECT_EQ(actual.data_bf16.empty(), type != ComputeType::kBfloat16);
        EXPECT_EQ(actual.data_int8.empty(), type != ComputeType::kInt8);
      }
    }
  }
  // float32 is PackWeights itself.
  const std::vector<float> w = testing::RandomVector(40 * 7, rng);
  const PackedWeights a = PackWeights(w.data(), nullptr, 40, 7, ComputeType::kFloat32);
  const PackedWeights b = PackWeights(w.data(), nullptr, 40, 7);
  EXPECT_EQ(a.type, ComputeType::kFloat32);
  ASSERT_EQ(a.data.size(), b.data.size());
  EXPECT_EQ(std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace rosetta
