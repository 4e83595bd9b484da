// Tests of engine/ops.h and Gemm (engine/blas.h) against naive double-precision references.
#include "engine/ops.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/blas.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::rosetta::testing::RandomVector;
using ::testing::HasSubstr;

// The [rows x cols] shapes every row-wise op is checked on.
const std::vector<std::pair<int64_t, int64_t>>& Shapes() {
  static const auto* shapes =
      new std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {4, 64}, {5, 513}, {2, 2048}};
  return *shapes;
}

// Vector lengths for the element-wise ops: odd ones and ones that are not multiples of 8 or 16, so
// that vectorised loops must handle their tails.
const std::vector<int64_t>& Lengths() {
  static const auto* lengths =
      new std::vector<int64_t>{1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 100, 513, 2048, 2049};
  return *lengths;
}

// |actual - expected| <= abs_tol + rel_tol * |expected|.
void ExpectClose(double expected, float actual, double rel_tol, double abs_tol,
                 const std::string& what) {
  EXPECT_LE(std::abs(static_cast<double>(actual) - expected),
            abs_tol + rel_tol * std::abs(expected))
      << what << ": expected " << expected << ", got " << actual;
}

std::string ShapeName(int64_t rows, int64_t cols) { return absl::StrCat(rows, "x", cols); }

// ---------------------------------------------------------------------------------------------
// LayerNorm

std::vector<double> ReferenceLayerNorm(const std::vector<float>& x, const std::vector<float>& gamma,
                                       const std::vector<float>& beta, double eps, int64_t rows,
                                       int64_t cols) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0;
    for (int64_t c = 0; c < cols; ++c) mean += x[r * cols + c];
    mean /= static_cast<double>(cols);
    double var = 0.0;
    for (int64_t c = 0; c < cols; ++c) {
      const double d = x[r * cols + c] - mean;
      var += d * d;
    }
    var /= static_cast<double>(cols);
    const double inv_std = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < cols; ++c) {
      out[r * cols + c] = (x[r * cols + c] - mean) * inv_std * gamma[c] + beta[c];
    }
  }
  return out;
}

TEST(LayerNormTest, MatchesReference) {
  std::mt19937 rng(1);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    std::vector<float> x = RandomVector(rows * cols, rng, 2.0f);
    for (float& v : x) v += 3.0f;  // a non-zero mean, so that centring matters
    const std::vector<float> gamma = RandomVector(cols, rng);
    const std::vector<float> beta = RandomVector(cols, rng);
    const float eps = 1e-5f;
    std::vector<float> out(x.size(), std::numeric_limits<float>::quiet_NaN());
    LayerNorm(x.data(), gamma.data(), beta.data(), eps, rows, cols, out.data());
    const std::vector<double> expected = ReferenceLayerNorm(x, gamma, beta, eps, rows, cols);
    for (size_t i = 0; i < out.size(); ++i) {
      ExpectClose(expected[i], out[i], 1e-5, 1e-5, absl::StrCat("element ", i));
    }
  }
}

TEST(LayerNormTest, InPlaceMatchesOutOfPlace) {
  std::mt19937 rng(2);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const std::vector<float> x = RandomVector(rows * cols, rng, 0.5f);
    const std::vector<float> gamma = RandomVector(cols, rng);
    const std::vector<float> beta = RandomVector(cols, rng);
    const std::vector<double> expected = ReferenceLayerNorm(x, gamma, beta, 1e-6, rows, cols);
    std::vector<float> separate(x.size());
    LayerNorm(x.data(), gamma.data(), beta.data(), 1e-6f, rows, cols, separate.data());
    std::vector<float> in_place = x;
    LayerNorm(in_place.data(), gamma.data(), beta.data(), 1e-6f, rows, cols, in_place.data());
    for (size_t i = 0; i < x.size(); ++i) {
      ExpectClose(expected[i], in_place[i], 1e-5, 1e-5, absl::StrCat("element ", i));
      EXPECT_FLOAT_EQ(in_place[i], separate[i]) << "element " << i;
    }
  }
}

TEST(LayerNormTest, ConstantRowGivesBeta) {
  // Zero variance: the result is beta, finite thanks to eps.
  const std::vector<float> x(16, 7.5f);
  std::vector<float> gamma(16), beta(16);
  for (int i = 0; i < 16; ++i) {
    gamma[i] = 1.0f + i;
    beta[i] = 0.25f * i - 1.0f;
  }
  std::vector<float> out(16);
  LayerNorm(x.data(), gamma.data(), beta.data(), 1e-5f, 1, 16, out.data());
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(out[i], beta[i]) << i;
}

TEST(AddLayerNormTest, MatchesLayerNormOfTheSum) {
  // The residual connection of a post-norm layer: LN(a + b), into a separate buffer and in place
  // over either input, on rows that are not multiples of 16 too.
  std::mt19937 rng(3);
  std::vector<std::pair<int64_t, int64_t>> shapes = Shapes();
  shapes.push_back({7, 384});
  shapes.push_back({3, 17});
  for (const auto& [rows, cols] : shapes) {
    SCOPED_TRACE(ShapeName(rows, cols));
    std::vector<float> a = RandomVector(rows * cols, rng, 2.0f);
    for (float& v : a) v += 3.0f;
    const std::vector<float> b = RandomVector(rows * cols, rng);
    const std::vector<float> gamma = RandomVector(cols, rng);
    const std::vector<float> beta = RandomVector(cols, rng);
    std::vector<float> sum(a.size());
    for (size_t i = 0; i < a.size(); ++i) sum[i] = a[i] + b[i];
    const std::vector<double> expected = ReferenceLayerNorm(sum, gamma, beta, 1e-12, rows, cols);
    std::vector<float> out(a.size(), std::numeric_limits<float>::quiet_NaN());
    AddLayerNorm(a.data(), b.data(), gamma.data(), beta.data(), 1e-12f, rows, cols, out.data());
    std::vector<float> over_a = a, over_b = b;
    AddLayerNorm(over_a.data(), b.data(), gamma.data(), beta.data(), 1e-12f, rows, cols,
                 over_a.data());
    AddLayerNorm(a.data(), over_b.data(), gamma.data(), beta.data(), 1e-12f, rows, cols,
                 over_b.data());
    for (size_t i = 0; i < out.size(); ++i) {
      ExpectClose(expected[i], out[i], 1e-5, 1e-5, absl::StrCat("element ", i));
      EXPECT_EQ(over_a[i], out[i]) << "element " << i;
      EXPECT_EQ(over_b[i], out[i]) << "element " << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and LogSoftmax

std::vector<double> ReferenceSoftmax(const float* x, int64_t n) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) max_value = std::max<double>(max_value, x[i]);
  std::vector<double> out(n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(static_cast<double>(x[i]) - max_value);
    sum += out[i];
  }
  for (double& v : out) v /= sum;
  return out;
}

std::vector<double> ReferenceLogSoftmax(const float* x, int64_t n) {
  double max_value = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) max_value = std::max<double>(max_value, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - max_value);
  const double log_z = max_value + std::log(sum);
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - log_z;
  return out;
}

TEST(SoftmaxTest, MatchesReference) {
  std::mt19937 rng(3);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const std::vector<float> x = RandomVector(rows * cols, rng, 4.0f);
    std::vector<float> y = x;
    for (int64_t r = 0; r < rows; ++r) Softmax(y.data() + r * cols, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> expected = ReferenceSoftmax(x.data() + r * cols, cols);
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        ExpectClose(expected[c], y[r * cols + c], 1e-5, 1e-9, absl::StrCat("row ", r, " col ", c));
        EXPECT_GE(y[r * cols + c], 0.0f);
        sum += y[r * cols + c];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << r;
    }
  }
}

TEST(SoftmaxTest, OnlyTouchesTheFirstNValues) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, 42.0f, -7.0f};
  Softmax(x.data(), 3);
  const std::vector<double> expected = ReferenceSoftmax(std::vector<float>{1, 2, 3}.data(), 3);
  for (int i = 0; i < 3; ++i) ExpectClose(expected[i], x[i], 1e-6, 1e-9, absl::StrCat(i));
  EXPECT_EQ(x[3], 42.0f);
  EXPECT_EQ(x[4], -7.0f);
}

TEST(SoftmaxTest, SingleValueIsOne) {
  for (float v : {0.0f, -3.0f, 1000.0f, -1e30f, 1e30f}) {
    float x = v;
    Softmax(&x, 1);
    EXPECT_EQ(x, 1.0f) << "input " << v;
  }
}

TEST(SoftmaxTest, StableForLargeValues) {
  // exp(1000) overflows float: the maximum must be subtracted first.
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, 1000.5f, -1000.0f, 3000.0f, 2999.0f};
  const std::vector<double> expected = ReferenceSoftmax(x.data(), x.size());
  Softmax(x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(x[i])) << i;
    ExpectClose(expected[i], x[i], 1e-5, 1e-12, absl::StrCat("element ", i));
  }

  // Equal huge values: uniform.
  std::vector<float> same(10, 5e4f);
  Softmax(same.data(), same.size());
  for (float v : same) EXPECT_NEAR(v, 0.1f, 1e-6f);

  // Huge negative values: still a distribution.
  std::vector<float> negative = {-2000.0f, -2001.0f, -2002.0f};
  const std::vector<double> expected_negative = ReferenceSoftmax(negative.data(), 3);
  Softmax(negative.data(), 3);
  for (int i = 0; i < 3; ++i) {
    ExpectClose(expected_negative[i], negative[i], 1e-5, 1e-12, absl::StrCat(i));
  }
}

TEST(LogSoftmaxTest, MatchesReference) {
  std::mt19937 rng(4);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const std::vector<float> x = RandomVector(rows * cols, rng, 4.0f);
    std::vector<float> y = x;
    LogSoftmax(y.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<double> expected = ReferenceLogSoftmax(x.data() + r * cols, cols);
      double sum_exp = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        ExpectClose(expected[c], y[r * cols + c], 1e-5, 1e-5, absl::StrCat("row ", r, " col ", c));
        EXPECT_LE(y[r * cols + c], 1e-6f);
        sum_exp += std::exp(static_cast<double>(y[r * cols + c]));
      }
      EXPECT_NEAR(sum_exp, 1.0, 1e-5) << "row " << r;
    }
  }
}

TEST(LogSoftmaxTest, MatchesLogOfSoftmax) {
  std::mt19937 rng(5);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const std::vector<float> x = RandomVector(rows * cols, rng, 3.0f);
    std::vector<float> log_probs = x;
    LogSoftmax(log_probs.data(), rows, cols);
    std::vector<float> probs = x;
    for (int64_t r = 0; r < rows; ++r) Softmax(probs.data() + r * cols, cols);
    for (size_t i = 0; i < x.size(); ++i) {
      // Where the probability is not tiny, log(softmax) is accurate enough to compare with.
      if (probs[i] < 1e-30f) continue;
      ExpectClose(std::log(static_cast<double>(probs[i])), log_probs[i], 1e-5, 1e-5,
                  absl::StrCat("element ", i));
    }
  }
}

TEST(LogSoftmaxTest, StableForLargeValues) {
  // exp(1000) overflows float: the result must still be finite and close to the reference.
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, -1000.0f, 1500.0f, 1500.0f};
  const std::vector<double> expected_row0 = ReferenceLogSoftmax(x.data(), 3);
  const std::vector<double> expected_row1 = ReferenceLogSoftmax(x.data() + 3, 3);
  LogSoftmax(x.data(), 2, 3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(std::isfinite(x[i]));
    ASSERT_TRUE(std::isfinite(x[3 + i]));
    // Loose: see ShiftInvariantForLargeLogits for the precision.
    ExpectClose(expected_row0[i], x[i], 1e-4, 1e-4, absl::StrCat("row 0, ", i));
    ExpectClose(expected_row1[i], x[3 + i], 1e-4, 1e-4, absl::StrCat("row 1, ", i));
  }
}

// Regression (fixed): LogSoftmax once computed `log_z = max_value + std::log(sum)` is rounded to a
// float of the magnitude of max_value before being subtracted, so every output carries an absolute
// error of up to ulp(max_value) / 2 however close the row's values are: for the row {1500, 1500} it
// returns -0.693115234 instead of log(0.5) = -0.693147181 (error 3.2e-5, 4.6e-5 relative), and the
// probabilities then sum to 1.000064. Subtracting in two steps, (row[c] - max_value) - log(sum),
// keeps the result independent of the logits' offset.
TEST(LogSoftmaxTest, ShiftInvariantForLargeLogits) {
  std::vector<float> pair = {1500.0f, 1500.0f};
  LogSoftmax(pair.data(), 1, 2);
  EXPECT_NEAR(pair[0], std::log(0.5), 1e-6);
  EXPECT_NEAR(pair[1], std::log(0.5), 1e-6);

  std::mt19937 rng(13);
  for (float shift : {100.0f, 1000.0f, -2000.0f}) {
    SCOPED_TRACE(absl::StrCat("shift = ", shift));
    std::vector<float> x = RandomVector(64, rng, 3.0f);
    for (float& v : x) v += shift;
    const std::vector<double> expected = ReferenceLogSoftmax(x.data(), x.size());
    LogSoftmax(x.data(), 1, x.size());
    double sum_exp = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      ExpectClose(expected[i], x[i], 1e-5, 1e-5, absl::StrCat("element ", i));
      sum_exp += std::exp(static_cast<double>(x[i]));
    }
    EXPECT_NEAR(sum_exp, 1.0, 1e-5);
  }
}

TEST(LogSoftmaxTest, SingleColumnIsZero) {
  std::vector<float> x = {3.0f, -1000.0f, 1e20f};
  LogSoftmax(x.data(), 3, 1);
  for (float v : x) EXPECT_EQ(v, 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Activations

double ReferenceActivation(Activation activation, double x) {
  switch (activation) {
    case Activation::kRelu:
      return x > 0.0 ? x : 0.0;
    case Activation::kGelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGeluTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case Activation::kSilu:
      return x / (1.0 + std::exp(-x));
  }
  return std::numeric_limits<double>::quiet_NaN();
}

TEST(ApplyActivationTest, MatchesFormulas) {
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> uniform(-10.0f, 10.0f);
  for (Activation activation :
       {Activation::kRelu, Activation::kGelu, Activation::kGeluTanh, Activation::kSilu}) {
    SCOPED_TRACE(ActivationName(activation));
    for (int64_t n : Lengths()) {
      SCOPED_TRACE(absl::StrCat("n = ", n));
      std::vector<float> x(n + 1);
      for (float& v : x) v = uniform(rng);
      // Interesting points first.
      const std::vector<float> special = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -3.0f, 3.0f, 20.0f};
      for (size_t i = 0; i < special.size() && i < static_cast<size_t>(n); ++i) x[i] = special[i];
      const float sentinel = 123.0f;
      x[n] = sentinel;
      const std::vector<float> input = x;
      ApplyActivation(activation, x.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        ExpectClose(ReferenceActivation(activation, input[i]), x[i], 1e-5, 1e-6,
                    absl::StrCat("x = ", input[i]));
      }
      EXPECT_EQ(x[n], sentinel) << "wrote past n";
    }
  }
}

TEST(ApplyActivationTest, ExtremeInputs) {
  std::vector<float> x = {-100.0f, -30.0f, 30.0f, 100.0f};
  const std::vector<float> input = x;
  for (Activation activation :
       {Activation::kRelu, Activation::kGelu, Activation::kGeluTanh, Activation::kSilu}) {
    SCOPED_TRACE(ActivationName(activation));
    x = input;
    ApplyActivation(activation, x.data(), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_TRUE(std::isfinite(x[i])) << input[i];
      ExpectClose(ReferenceActivation(activation, input[i]), x[i], 1e-5, 1e-6,
                  absl::StrCat("x = ", input[i]));
    }
  }
}

TEST(ApplyActivationTest, GeluVariantsDiffer) {
  // The exact and tanh-approximated GELU differ by ~1.5e-4 at x = 1: they must not be confused.
  float exact = 1.0f, approx = 1.0f;
  ApplyActivation(Activation::kGelu, &exact, 1);
  ApplyActivation(Activation::kGeluTanh, &approx, 1);
  EXPECT_NEAR(exact, 0.8413447460685429, 1e-6);
  EXPECT_NEAR(approx, 0.8411919906082768, 1e-6);
}

TEST(ParseActivationTest, KnownNames) {
  const std::vector<std::pair<std::string, Activation>> cases = {
      {"relu", Activation::kRelu},         {"gelu", Activation::kGelu},
      {"gelu_new", Activation::kGeluTanh}, {"gelu_pytorch_tanh", Activation::kGeluTanh},
      {"swish", Activation::kSilu},        {"silu", Activation::kSilu},
  };
  for (const auto& [name, expected] : cases) {
    absl::StatusOr<Activation> parsed = ParseActivation(name);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    EXPECT_EQ(*parsed, expected) << name;
  }
}

TEST(ParseActivationTest, UnknownNameIsInvalidArgumentNamingIt) {
  for (const std::string name : {"gelu_fancy", "tanh", ""}) {
    absl::StatusOr<Activation> parsed = ParseActivation(name);
    ASSERT_FALSE(parsed.ok()) << name;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("\"" + name + "\""));
  }
}

TEST(ActivationNameTest, DistinctNames) {
  const std::vector<Activation> all = {Activation::kRelu, Activation::kGelu, Activation::kGeluTanh,
                                       Activation::kSilu};
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_FALSE(ActivationName(all[i]).empty());
    for (size_t j = 0; j < i; ++j) EXPECT_NE(ActivationName(all[i]), ActivationName(all[j]));
  }
  EXPECT_EQ(ActivationName(Activation::kRelu), "relu");
  EXPECT_EQ(ActivationName(Activation::kGelu), "gelu");
  EXPECT_EQ(ActivationName(Activation::kSilu), "silu");
}

// ---------------------------------------------------------------------------------------------
// AddBias, Add, Dot, Axpy

TEST(AddBiasTest, AddsBiasToEveryRow) {
  std::mt19937 rng(7);
  for (const auto& [rows, cols] : Shapes()) {
    SCOPED_TRACE(ShapeName(rows, cols));
    const std::vector<float> x = RandomVector(rows * cols, rng);
    const std::vector<float> bias = RandomVector(cols, rng);
    std::vector<float> y = x;
    y.push_back(55.0f);  // sentinel
    AddBias(y.data(), bias.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        EXPECT_EQ(y[r * cols + c], x[r * cols + c] + bias[c]) << "row " << r << " col " << c;
      }
    }
    EXPECT_EQ(y.back(), 55.0f);
  }
}

TEST(AddTest, AddsAndSupportsAliasing) {
  std::mt19937 rng(8);
  for (int64_t n : Lengths()) {
    SCOPED_TRACE(absl::StrCat("n = ", n));
    const std::vector<float> a = RandomVector(n, rng);
    const std::vector<float> b = RandomVector(n, rng);

    std::vector<float> out(n + 1, 9.0f);
    Add(a.data(), b.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + b[i]) << i;
    EXPECT_EQ(out[n], 9.0f) << "wrote past n";

    std::vector<float> alias_a = a;
    Add(alias_a.data(), b.data(), alias_a.data(), n);
    std::vector<float> alias_b = b;
    Add(a.data(), alias_b.data(), alias_b.data(), n);
    std::vector<float> both = a;
    Add(both.data(), both.data(), both.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(alias_a[i], a[i] + b[i]) << i;
      EXPECT_EQ(alias_b[i], a[i] + b[i]) << i;
      EXPECT_EQ(both[i], a[i] + a[i]) << i;
    }
  }
}

TEST(DotTest, MatchesReference) {
  std::mt19937 rng(9);
  for (int64_t n : Lengths()) {
    SCOPED_TRACE(absl::StrCat("n = ", n));
    const std::vector<float> a = RandomVector(n, rng);
    const std::vector<float> b = RandomVector(n, rng);
    double expected = 0.0, magnitude = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      expected += static_cast<double>(a[i]) * b[i];
      magnitude += std::abs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(Dot(a.data(), b.data(), n), expected, 1e-5 * magnitude + 1e-7);
  }
}

TEST(DotTest, ExactSmallCases) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17};
  const std::vector<float> b(17, 1.0f);
  EXPECT_EQ(Dot(a.data(), b.data(), 0), 0.0f);
  EXPECT_EQ(Dot(a.data(), b.data(), 1), 1.0f);
  EXPECT_EQ(Dot(a.data(), b.data(), 16), 136.0f);
  EXPECT_EQ(Dot(a.data(), b.data(), 17), 153.0f);
  EXPECT_EQ(Dot(a.data(), a.data(), 3), 14.0f);
}

TEST(AxpyTest, MatchesReference) {
  std::mt19937 rng(10);
  for (int64_t n : Lengths()) {
    for (float alpha : {0.0f, 1.0f, -0.375f, 2.5f}) {
      SCOPED_TRACE(absl::StrCat("n = ", n, ", alpha = ", alpha));
      const std::vector<float> x = RandomVector(n, rng);
      std::vector<float> y = RandomVector(n + 1, rng);
      y[n] = -77.0f;
      const std::vector<float> y0 = y;
      Axpy(alpha, x.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double expected = y0[i] + static_cast<double>(alpha) * x[i];
        ExpectClose(expected, y[i], 1e-6, 1e-6, absl::StrCat("element ", i));
      }
      EXPECT_EQ(y[n], -77.0f) << "wrote past n";
    }
  }
}

TEST(AxpyTest, UnalignedPointers) {
  // Offsets by one float: the kernels must not assume aligned inputs.
  std::mt19937 rng(11);
  const int64_t n = 37;
  std::vector<float> x = RandomVector(n + 1, rng);
  std::vector<float> y = RandomVector(n + 2, rng);
  const std::vector<float> y0 = y;
  Axpy(0.5f, x.data() + 1, y.data() + 1, n);
  EXPECT_EQ(y[0], y0[0]);
  for (int64_t i = 0; i < n; ++i) {
    ExpectClose(y0[i + 1] + 0.5 * x[i + 1], y[i + 1], 1e-6, 1e-6, absl::StrCat(i));
  }
  EXPECT_EQ(y[n + 1], y0[n + 1]);
}

// ---------------------------------------------------------------------------------------------
// Gemm

struct GemmCase {
  int m, n, k;
};

TEST(GemmTest, MatchesNaiveLoopsForAllTranspositions) {
  std::mt19937 rng(12);
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  const std::vector<GemmCase> cases = {{1, 1, 1}, {3, 5, 7}, {8, 8, 8}, {17, 33, 9}, {64, 48, 80}};
  for (const GemmCase& gc : cases) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        for (float beta : {0.0f, 0.5f}) {
          const int m = gc.m, n = gc.n, k = gc.k;
          SCOPED_TRACE(absl::StrCat("m=", m, " n=", n, " k=", k, " trans_a=", trans_a,
                                    " trans_b=", trans_b, " beta=", beta));
          // Stored shapes: A is [m x k] or, transposed, [k x m]; B is [k x n] or [n x k].
          const int a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
          const int b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
          // Leading dimensions larger than the rows, the padding full of NaN: any read of it
          // would poison the result.
          const int lda = a_cols + 3, ldb = b_cols + 5, ldc = n + 2;
          std::vector<float> a(static_cast<size_t>(a_rows) * lda, kNaN);
          std::vector<float> b(static_cast<size_t>(b_rows) * ldb, kNaN);
          for (int r = 0; r < a_rows; ++r) {
            for (int c = 0; c < a_cols; ++c) a[r * lda + c] = RandomVector(1, rng)[0];
          }
          for (int r = 0; r < b_rows; ++r) {
            for (int c = 0; c < b_cols; ++c) b[r * ldb + c] = RandomVector(1, rng)[0];
          }
          const float padding = -321.0f;
          std::vector<float> c(static_cast<size_t>(m) * ldc, padding);
          for (int r = 0; r < m; ++r) {
            for (int j = 0; j < n; ++j) {
              // With beta == 0, C must not be read at all (it may hold garbage).
              c[r * ldc + j] = beta == 0.0f ? kNaN : RandomVector(1, rng)[0];
            }
          }
          const std::vector<float> c0 = c;
          const float alpha = 1.5f;
          Gemm(trans_a, trans_b, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          for (int i = 0; i < m; ++i) {
            for (int j = 0; j < n; ++j) {
              double sum = 0.0, magnitude = 0.0;
              for (int p = 0; p < k; ++p) {
                const double av = trans_a ? a[p * lda + i] : a[i * lda + p];
                const double bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                sum += av * bv;
                magnitude += std::abs(av * bv);
              }
              double expected = alpha * sum;
              if (beta != 0.0f) expected += beta * static_cast<double>(c0[i * ldc + j]);
              EXPECT_NEAR(c[i * ldc + j], expected, 1e-5 * (magnitude + 1.0))
                  << "C[" << i << "][" << j << "]";
            }
            for (int j = n; j < ldc; ++j) {
              EXPECT_EQ(c[i * ldc + j], padding) << "padding of C row " << i << " modified";
            }
          }
        }
      }
    }
  }
}

TEST(GemmTest, EmptyOutputIsANoOp) {
  std::vector<float> a(4, 1.0f), b(4, 1.0f), c(4, 7.0f);
  Gemm(false, false, 0, 2, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
  Gemm(false, false, 2, 0, 2, 1.0f, a.data(), 2, b.data(), 2, 0.0f, c.data(), 2);
  for (float v : c) EXPECT_EQ(v, 7.0f);
}

}  // namespace
}  // namespace rosetta
