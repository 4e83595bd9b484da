#include "engine/packed_gemm.h"

#include <random>

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

TEST(PackedGemm, MatchesNaiveOverShapes) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "this CPU has no AVX-512";
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (int m : {1, 2, 11, 12, 13, 25, 40}) {
    for (auto [n, k] :
         {std::pair{1, 1}, {16, 7}, {31, 33}, {32, 64}, {33, 5}, {100, 130}, {257, 64}}) {
      for (bool with_bias : {false, true}) {
        for (int ldx_extra : {0, 3}) {
          const int ldx = k + ldx_extra;
          std::vector<float> x = testing::RandomVector(static_cast<size_t>(m) * ldx, rng);
          std::vector<float> w = testing::RandomVector(static_cast<size_t>(n) * k, rng);
          std::vector<float> b = with_bias ? testing::RandomVector(n, rng) : std::vector<float>{};
          const PackedWeights packed = PackWeights(w.data(), with_bias ? b.data() : nullptr, n, k);
          const std::vector<double> expected = Naive(x, m, ldx, w, b, n, k);
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            // ldy larger than n: columns past n must stay untouched.
            const int ldy = n + 5;
            std::vector<float> y(static_cast<size_t>(m) * ldy, 1234.0f);
            PackedLinear(x.data(), m, ldx, packed, y.data(), ldy, p);
            for (int i = 0; i < m; ++i) {
              for (int j = 0; j < ldy; ++j) {
                const float got = y[static_cast<size_t>(i) * ldy + j];
                if (j >= n) {
                  ASSERT_EQ(got, 1234.0f) << "wrote past n at row " << i << " col " << j;
                  continue;
                }
                const double want = expected[static_cast<size_t>(i) * n + j];
                ASSERT_NEAR(got, want, 1e-4 * (1.0 + std::abs(want)) * std::sqrt(k))
                    << "m=" << m << " n=" << n << " k=" << k << " at " << i << "," << j;
              }
            }
          }
        }
      }
    }
  }
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

}  // namespace
}  // namespace rosetta
