// Tests of engine/attention.h against a naive double-precision reference with an explicit mask.
#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::rosetta::testing::RandomVector;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
// Without AVX-512, or with more keys than attention.cc's kMaxKeysForAvx512 (256), blocks of at
// least this many query rows take the GEMM path, smaller ones the row path.
constexpr int kGemmRows = 8;
// More keys than the AVX-512 block kernel takes: the row and GEMM paths.
constexpr int kLongKeys = 300;

struct Config {
  int tq = 1;
  int tk = 1;
  int heads = 1;
  int head_dim = 4;
  int key_length = 1;
  bool causal = false;
  int causal_offset = 0;

  std::string Name() const {
    return absl::StrCat("tq=", tq, " tk=", tk, " heads=", heads, " head_dim=", head_dim,
                        " key_length=", key_length, " causal=", causal,
                        " causal_offset=", causal_offset);
  }
  int d() const { return heads * head_dim; }
  AttentionShape Shape() const {
    AttentionShape shape;
    shape.num_heads = heads;
    shape.head_dim = head_dim;
    shape.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    return shape;
  }
};

// mask[i][j]: whether query i sees key j.
std::vector<std::vector<bool>> MaskOf(const Config& c) {
  std::vector<std::vector<bool>> mask(c.tq, std::vector<bool>(c.tk, false));
  for (int i = 0; i < c.tq; ++i) {
    for (int j = 0; j < c.tk; ++j) {
      mask[i][j] = j < c.key_length && (!c.causal || j <= i + c.causal_offset);
    }
  }
  return mask;
}

// Rows of tq (or tk) rows, each row `ld` floats of which the first `d` are used.
struct Strided {
  const float* data;
  int ld;
  const float* Row(int i) const { return data + static_cast<int64_t>(i) * ld; }
};

// The reference: out[i] = sum_j softmax_j(q_i . k_j * scale over visible j) v_j, per head.
std::vector<double> Reference(const Config& c, Strided q, Strided k, Strided v) {
  const auto mask = MaskOf(c);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  std::vector<double> out(static_cast<size_t>(c.tq) * c.d(), 0.0);
  for (int i = 0; i < c.tq; ++i) {
    for (int h = 0; h < c.heads; ++h) {
      const int off = h * c.head_dim;
      std::vector<double> scores(c.tk, -std::numeric_limits<double>::infinity());
      double max_score = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < c.tk; ++j) {
        if (!mask[i][j]) continue;
        double s = 0.0;
        for (int x = 0; x < c.head_dim; ++x) {
          s += static_cast<double>(q.Row(i)[off + x]) * k.Row(j)[off + x];
        }
        scores[j] = s * scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0.0;
      for (int j = 0; j < c.tk; ++j) {
        scores[j] = mask[i][j] ? std::exp(scores[j] - max_score) : 0.0;
        sum += scores[j];
      }
      for (int j = 0; j < c.tk; ++j) {
        if (!mask[i][j]) continue;
        for (int x = 0; x < c.head_dim; ++x) {
          out[static_cast<size_t>(i) * c.d() + off + x] += scores[j] / sum * v.Row(j)[off + x];
        }
      }
    }
  }
  return out;
}

// Random rows of `d` values with a leading dimension `ld`, the padding full of NaN so that reading
// it would show in the output.
std::vector<float> StridedRandom(int rows, int d, int ld, std::mt19937& rng) {
  std::vector<float> m(static_cast<size_t>(rows) * ld, kNaN);
  const std::vector<float> values = RandomVector(static_cast<size_t>(rows) * d, rng);
  for (int r = 0; r < rows; ++r) {
    std::copy(values.begin() + static_cast<int64_t>(r) * d,
              values.begin() + static_cast<int64_t>(r + 1) * d,
              m.begin() + static_cast<int64_t>(r) * ld);
  }
  return m;
}

// An output buffer of tq rows, ldo floats apart: NaN where the rows go (they must be
// overwritten), a sentinel in the padding (it must not be).
constexpr float kOutPadding = -999.0f;
std::vector<float> FreshOutput(const Config& c, int ldo) {
  std::vector<float> out(static_cast<size_t>(c.tq) * ldo, kOutPadding);
  for (int i = 0; i < c.tq; ++i)
    std::fill_n(out.begin() + static_cast<int64_t>(i) * ldo, c.d(), kNaN);
  return out;
}

// Runs AttendBlock on separate Q, K, V buffers with the given leading dimensions; returns the
// output buffer ([tq x ldo], its padding initialised to a sentinel).
std::vector<float> RunBlock(const Config& c, const std::vector<float>& q, int ldq,
                            const std::vector<float>& k, int ldk, const std::vector<float>& v,
                            int ldv, int ldo) {
  std::vector<float> out = FreshOutput(c, ldo);
  BlockAttentionArgs args;
  args.q = q.data();
  args.ldq = ldq;
  args.k = k.data();
  args.ldk = ldk;
  args.v = v.data();
  args.ldv = ldv;
  args.out = out.data();
  args.ldo = ldo;
  args.tq = c.tq;
  args.tk = c.tk;
  args.key_length = c.key_length;
  args.causal = c.causal;
  args.causal_offset = c.causal_offset;
  const AttentionShape shape = c.Shape();
  std::vector<float> scratch(AttendBlockScratchFloats(c.tq, c.tk, shape), kNaN);
  AttendBlock(args, shape, scratch.data());
  return out;
}

void ExpectMatches(const Config& c, const std::vector<double>& expected,
                   const std::vector<float>& out, int ldo) {
  int failures = 0;
  for (int i = 0; i < c.tq; ++i) {
    for (int x = 0; x < c.d(); ++x) {
      const double want = expected[static_cast<size_t>(i) * c.d() + x];
      const float got = out[static_cast<size_t>(i) * ldo + x];
      if (!(std::abs(got - want) <= 2e-5 + 1e-5 * std::abs(want))) {
        ADD_FAILURE() << c.Name() << ": out[" << i << "][" << x << "] = " << got << ", expected "
                      << want;
        if (++failures > 5) return;
      }
    }
    for (int x = c.d(); x < ldo; ++x) {
      if (out[static_cast<size_t>(i) * ldo + x] != kOutPadding) {
        ADD_FAILURE() << c.Name() << ": wrote past the row into out[" << i << "][" << x << "]";
        if (++failures > 5) return;
      }
    }
  }
}

// Draws q, k and v (rows ldq, ldk, ldv floats apart, NaN padding), runs AttendBlock into rows ldo
// floats apart and compares with the reference.
void ExpectBlockMatchesReference(const Config& c, int ldq, int ldk, int ldv, int ldo,
                                 std::mt19937& rng) {
  const int d = c.d();
  const std::vector<float> q = StridedRandom(c.tq, d, ldq, rng);
  const std::vector<float> k = StridedRandom(c.tk, d, ldk, rng);
  const std::vector<float> v = StridedRandom(c.tk, d, ldv, rng);
  const std::vector<float> out = RunBlock(c, q, ldq, k, ldk, v, ldv, ldo);
  ExpectMatches(c, Reference(c, {q.data(), ldq}, {k.data(), ldk}, {v.data(), ldv}), out, ldo);
}

// Every (tq, tk, heads, head_dim) of the brief, each with padding and causal variants.
std::vector<Config> AllConfigs() {
  std::vector<Config> configs;
  const int sizes[] = {1, 3, 7, 8, 33};
  for (int tq : sizes) {
    for (int tk : sizes) {
      for (int heads : {1, 4, 8}) {
        for (int head_dim : {4, 16, 64}) {
          Config c;
          c.tq = tq;
          c.tk = tk;
          c.heads = heads;
          c.head_dim = head_dim;
          std::vector<int> key_lengths = {tk};
          if (tk > 1) key_lengths.push_back((tk + 1) / 2);
          for (int key_length : key_lengths) {
            c.key_length = key_length;
            c.causal = false;
            c.causal_offset = 0;
            configs.push_back(c);
            c.causal = true;
            for (int offset : {0, std::max(2, tk - tq)}) {
              c.causal_offset = offset;
              configs.push_back(c);
            }
          }
        }
      }
    }
  }
  return configs;
}

// Configurations for the AVX-512 block kernel's edges: query blocks of 4 (tq around multiples of
// 4), key tiles of 16 (tk around multiples of 16, up to the 256-key limit), head dimensions that
// are not multiples of 16, key_length padding and causal masks.
std::vector<Config> TileEdgeConfigs() {
  std::vector<Config> configs;
  for (int tq : {1, 2, 3, 4, 5, 9, 17}) {
    for (int tk : {1, 15, 16, 17, 33, 64, 255, 256}) {
      for (int head_dim : {8, 24, 32, 40}) {
        Config c;
        c.tq = tq;
        c.tk = tk;
        c.heads = head_dim == 32 ? 3 : 1;
        c.head_dim = head_dim;
        for (int key_length : {tk, (tk + 1) / 2}) {
          c.key_length = key_length;
          c.causal = false;
          c.causal_offset = 0;
          configs.push_back(c);
          c.causal = true;
          c.causal_offset = std::max(0, tk - tq);
          configs.push_back(c);
        }
      }
    }
  }
  return configs;
}

TEST(AttendBlockTest, MatchesReferenceAcrossTileEdges) {
  std::mt19937 rng(10);
  for (const Config& c : TileEdgeConfigs()) {
    const int d = c.d();
    const int ldq = d + 1, ldk = 3 * d, ldv = d + 16, ldo = d + 3;
    ExpectBlockMatchesReference(c, ldq, ldk, ldv, ldo, rng);
    if (HasFailure()) return;
  }
}

TEST(AttendBlockTest, MiniLmShape) {
  // 12 heads of 32 over a fused [q | k | v] row, as the all-MiniLM-L6-v2 encoder runs it, one head
  // per call (the encoder attends (sentence, head) pairs in parallel).
  std::mt19937 rng(11);
  for (int t : {1, 7, 32, 128}) {
    Config c;
    c.tq = c.tk = c.key_length = t;
    c.heads = 12;
    c.head_dim = 32;
    const int d = c.d();
    const std::vector<float> qkv = RandomVector(static_cast<size_t>(t) * 3 * d, rng);
    std::vector<float> out(static_cast<size_t>(t) * d, kNaN);
    AttentionShape one_head;
    one_head.num_heads = 1;
    one_head.head_dim = c.head_dim;
    one_head.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> scratch(AttendBlockScratchFloats(t, t, one_head), kNaN);
    for (int h = 0; h < c.heads; ++h) {
      BlockAttentionArgs args;
      args.q = qkv.data() + h * c.head_dim;
      args.k = args.q + d;
      args.v = args.q + 2 * d;
      args.ldq = args.ldk = args.ldv = 3 * d;
      args.out = out.data() + h * c.head_dim;
      args.ldo = d;
      args.tq = args.tk = args.key_length = t;
      AttendBlock(args, one_head, scratch.data());
    }
    const std::vector<double> expected =
        Reference(c, {qkv.data(), 3 * d}, {qkv.data() + d, 3 * d}, {qkv.data() + 2 * d, 3 * d});
    ExpectMatches(c, expected, out, d);
  }
}

TEST(AttendBlockTest, LongKeysMatchReference) {
  // Past the AVX-512 kernel's key limit: the row path (tq < 8) and the GEMM path.
  std::mt19937 rng(12);
  for (int tq : {1, 7, 8, 33}) {
    for (int head_dim : {8, 24, 64}) {
      for (bool causal : {false, true}) {
        Config c;
        c.tq = tq;
        c.tk = kLongKeys;
        c.key_length = kLongKeys - 20;
        c.heads = 2;
        c.head_dim = head_dim;
        c.causal = causal;
        c.causal_offset = kLongKeys - 40;
        const int d = c.d();
        ExpectBlockMatchesReference(c, d, d, d, d, rng);
        if (HasFailure()) return;
      }
    }
  }
}

TEST(AttendBlockTest, ScratchCoversTheGemmPath) {
  AttentionShape shape;
  shape.num_heads = 4;
  shape.head_dim = 24;
  for (int tq : {1, 8, 300}) {
    for (int tk : {1, 16, 256, kLongKeys}) {
      EXPECT_GE(AttendBlockScratchFloats(tq, tk, shape), static_cast<int64_t>(tq) * tk);
    }
  }
}

TEST(AttendBlockTest, MatchesReferenceOnAllShapes) {
  std::mt19937 rng(1);
  int gemm_configs = 0, row_configs = 0;
  for (const Config& c : AllConfigs()) {
    const int d = c.d();
    ExpectBlockMatchesReference(c, d, d, d, d, rng);
    (c.tq >= kGemmRows ? gemm_configs : row_configs)++;
    if (HasFailure()) return;
  }
  // Both sizes of block were exercised (with AVX-512 every one of these takes the AVX-512 kernel;
  // LongKeysMatchReference covers the row and GEMM paths there).
  EXPECT_GT(gemm_configs, 0);
  EXPECT_GT(row_configs, 0);
}

TEST(AttendBlockTest, LeadingDimensionsLargerThanRows) {
  // Separate buffers with padded rows (NaN in the padding) and a padded output.
  std::mt19937 rng(2);
  for (const Config& c : AllConfigs()) {
    if (c.heads == 8 && c.head_dim == 64) continue;  // keep it quick; the layout is what matters
    const int d = c.d();
    const int ldq = d + 3, ldk = d + 16, ldv = 2 * d + 1, ldo = d + 5;
    ExpectBlockMatchesReference(c, ldq, ldk, ldv, ldo, rng);
    if (HasFailure()) return;
  }
}

TEST(AttendBlockTest, FusedQkvLayout) {
  // Self-attention over a fused projection: each row is [q | k | v], so ld = 3 * d, and the output
  // is written into a buffer of its own.
  std::mt19937 rng(3);
  for (int t : {1, 3, 7, 8, 33}) {
    for (int heads : {1, 4, 8}) {
      for (int head_dim : {4, 16, 64}) {
        for (bool causal : {false, true}) {
          Config c;
          c.tq = c.tk = c.key_length = t;
          c.heads = heads;
          c.head_dim = head_dim;
          c.causal = causal;
          const int d = c.d();
          const std::vector<float> qkv = RandomVector(static_cast<size_t>(t) * 3 * d, rng);
          BlockAttentionArgs args;
          args.q = qkv.data();
          args.k = qkv.data() + d;
          args.v = qkv.data() + 2 * d;
          args.ldq = args.ldk = args.ldv = 3 * d;
          std::vector<float> out(static_cast<size_t>(t) * d, kNaN);
          args.out = out.data();
          args.ldo = d;
          args.tq = args.tk = args.key_length = t;
          args.causal = causal;
          const AttentionShape shape = c.Shape();
          std::vector<float> scratch(AttendBlockScratchFloats(t, t, shape));
          AttendBlock(args, shape, scratch.data());
          const std::vector<double> expected = Reference(
              c, {qkv.data(), 3 * d}, {qkv.data() + d, 3 * d}, {qkv.data() + 2 * d, 3 * d});
          ExpectMatches(c, expected, out, d);
          if (HasFailure()) return;
        }
      }
    }
  }
}

TEST(AttendBlockTest, OutputIntoAFusedBuffer) {
  // The output may be written into the rows of a wider buffer (ldo = 3 * d, GEMM path): only the
  // first d floats of each row change.
  std::mt19937 rng(4);
  Config c;
  c.tq = 9;
  c.tk = c.key_length = 12;
  c.heads = 4;
  c.head_dim = 16;
  const int d = c.d();
  ExpectBlockMatchesReference(c, d, d, d, 3 * d, rng);
}

// Replaces K and V rows that no query may see (j >= key_length) with `value`; the output must not
// change.
TEST(AttendBlockTest, PaddedKeysHaveNoInfluence) {
  std::mt19937 rng(5);
  for (const Config& c : AllConfigs()) {
    if (c.key_length == c.tk) continue;
    const int d = c.d();
    const std::vector<float> q = StridedRandom(c.tq, d, d, rng);
    std::vector<float> k = StridedRandom(c.tk, d, d, rng);
    std::vector<float> v = StridedRandom(c.tk, d, d, rng);
    const std::vector<float> before = RunBlock(c, q, d, k, d, v, d, d);
    for (float value : {1e30f, -1e30f, std::numeric_limits<float>::infinity(), kNaN}) {
      for (int j = c.key_length; j < c.tk; ++j) {
        std::fill_n(k.begin() + static_cast<int64_t>(j) * d, d, value);
        std::fill_n(v.begin() + static_cast<int64_t>(j) * d, d, value);
      }
      const std::vector<float> after = RunBlock(c, q, d, k, d, v, d, d);
      for (size_t x = 0; x < before.size(); ++x) {
        ASSERT_NEAR(after[x], before[x], 1e-6f)
            << c.Name() << " masked rows = " << value << ", element " << x;
      }
    }
  }
}

// Replaces K and V rows hidden by the causal mask from the first `rows` queries; those queries'
// outputs must not change.
void CheckCausallyMaskedKeysHaveNoInfluence(float value) {
  std::mt19937 rng(6);
  for (const Config& c : AllConfigs()) {
    if (!c.causal) continue;
    const int d = c.d();
    const std::vector<float> q = StridedRandom(c.tq, d, d, rng);
    std::vector<float> k = StridedRandom(c.tk, d, d, rng);
    std::vector<float> v = StridedRandom(c.tk, d, d, rng);
    const std::vector<float> before = RunBlock(c, q, d, k, d, v, d, d);
    // Queries 0..rows-1 see keys up to rows - 1 + causal_offset.
    const int rows = (c.tq + 1) / 2;
    const int first_hidden = rows + c.causal_offset;
    if (first_hidden >= c.tk) continue;
    for (int j = first_hidden; j < c.tk; ++j) {
      std::fill_n(k.begin() + static_cast<int64_t>(j) * d, d, value);
      std::fill_n(v.begin() + static_cast<int64_t>(j) * d, d, value);
    }
    const std::vector<float> after = RunBlock(c, q, d, k, d, v, d, d);
    for (int i = 0; i < rows; ++i) {
      for (int x = 0; x < d; ++x) {
        const size_t index = static_cast<size_t>(i) * d + x;
        ASSERT_NEAR(after[index], before[index], 1e-6f)
            << c.Name() << ": masked rows = " << value << ", out[" << i << "][" << x << "]";
      }
    }
  }
}

TEST(AttendBlockTest, CausallyMaskedKeysHaveNoInfluence) {
  for (float value : {1e30f, -1e30f, std::numeric_limits<float>::max()}) {
    CheckCausallyMaskedKeysHaveNoInfluence(value);
    if (HasFailure()) return;
  }
}

// Regression: the GEMM path (tq >= 8) once let causally hidden value rows into P * V, where 0 * inf
// made NaN; causal attention now reads only visible rows. Former description:
// with causal = true, the keys
// hidden from query i by the causal mask (i + causal_offset < j < key_length) get probability 0
// (the std::fill after Softmax) but their V rows still enter the second Gemm (P * V over all
// min(tk, key_length) rows), so a hidden V row holding inf or NaN turns the output of every query
// that must not see it into NaN (0 * inf = NaN). The per-row path (tq < 8) never reads those rows.
// Minimal case: tq = tk = key_length = 8, causal_offset = 0, V row 7 = +inf: out rows 0..6 are NaN.
// (No engine caller uses causal = true today: transformer.cc calls AttendBlock without it.)
TEST(AttendBlockTest, CausallyMaskedNonFiniteValuesHaveNoInfluence) {
  {
    Config c;
    c.tq = c.tk = c.key_length = 8;
    c.heads = 1;
    c.head_dim = 4;
    c.causal = true;
    std::mt19937 rng(9);
    const int d = c.d();
    const std::vector<float> q = StridedRandom(c.tq, d, d, rng);
    const std::vector<float> k = StridedRandom(c.tk, d, d, rng);
    std::vector<float> v = StridedRandom(c.tk, d, d, rng);
    const std::vector<float> before = RunBlock(c, q, d, k, d, v, d, d);
    std::fill_n(v.begin() + 7 * d, d, std::numeric_limits<float>::infinity());
    const std::vector<float> after = RunBlock(c, q, d, k, d, v, d, d);
    for (int i = 0; i < 7; ++i) {
      for (int x = 0; x < d; ++x) {
        EXPECT_EQ(after[i * d + x], before[i * d + x]) << "out[" << i << "][" << x << "]";
      }
    }
  }
  for (float value : {std::numeric_limits<float>::infinity(), kNaN}) {
    CheckCausallyMaskedKeysHaveNoInfluence(value);
    if (HasFailure()) return;
  }
}

TEST(AttendBlockTest, RowAndGemmPathsAgree) {
  // The same 8 queries, attended as one block (GEMM path) and one at a time (row path).
  std::mt19937 rng(7);
  for (bool causal : {false, true}) {
    Config c;
    c.tq = 8;
    c.tk = 20;
    c.key_length = 17;
    c.heads = 4;
    c.head_dim = 16;
    c.causal = causal;
    c.causal_offset = 5;
    const int d = c.d();
    const std::vector<float> q = StridedRandom(c.tq, d, d, rng);
    const std::vector<float> k = StridedRandom(c.tk, d, d, rng);
    const std::vector<float> v = StridedRandom(c.tk, d, d, rng);
    const std::vector<float> block = RunBlock(c, q, d, k, d, v, d, d);
    for (int i = 0; i < c.tq; ++i) {
      // Query i alone: causal offset shifted by i.
      Config one = c;
      one.tq = 1;
      one.causal_offset = c.causal_offset + i;
      const std::vector<float> qi(q.begin() + static_cast<int64_t>(i) * d,
                                  q.begin() + static_cast<int64_t>(i + 1) * d);
      const std::vector<float> row = RunBlock(one, qi, d, k, d, v, d, d);
      for (int x = 0; x < d; ++x) {
        EXPECT_NEAR(row[x], block[static_cast<size_t>(i) * d + x], 1e-5f)
            << "causal=" << causal << " query " << i << " element " << x;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AttendRow

TEST(AttendRowTest, ScatteredRowsEqualContiguousBlock) {
  std::mt19937 rng(8);
  for (int n : {1, 2, 3, 7, 8, 33}) {
    for (int heads : {1, 4, 8}) {
      for (int head_dim : {4, 16, 64}) {
        SCOPED_TRACE(absl::StrCat("n=", n, " heads=", heads, " head_dim=", head_dim));
        const int d = heads * head_dim;
        // A pool of 2n + 3 rows with a stride larger than d; the n keys and values are scattered
        // over it in shuffled order, K and V in different orders.
        const int pool_rows = 2 * n + 3;
        const int ld = d + 7;
        const std::vector<float> k_pool = StridedRandom(pool_rows, d, ld, rng);
        const std::vector<float> v_pool = StridedRandom(pool_rows, d, ld, rng);
        std::vector<int> k_rows(pool_rows), v_rows(pool_rows);
        std::iota(k_rows.begin(), k_rows.end(), 0);
        std::iota(v_rows.begin(), v_rows.end(), 0);
        std::shuffle(k_rows.begin(), k_rows.end(), rng);
        std::shuffle(v_rows.begin(), v_rows.end(), rng);
        std::vector<const float*> keys(n), values(n);
        std::vector<float> k_block(static_cast<size_t>(n) * d), v_block(static_cast<size_t>(n) * d);
        for (int j = 0; j < n; ++j) {
          keys[j] = k_pool.data() + static_cast<int64_t>(k_rows[j]) * ld;
          values[j] = v_pool.data() + static_cast<int64_t>(v_rows[j]) * ld;
          std::copy_n(keys[j], d, k_block.begin() + static_cast<int64_t>(j) * d);
          std::copy_n(values[j], d, v_block.begin() + static_cast<int64_t>(j) * d);
        }
        const std::vector<float> q = RandomVector(d, rng);

        AttentionShape shape;
        shape.num_heads = heads;
        shape.head_dim = head_dim;
        shape.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        std::vector<float> scores(n, kNaN);
        std::vector<float> out(d + 1, kNaN);
        out[d] = kOutPadding;
        AttendRow(q.data(), keys.data(), values.data(), n, shape, scores.data(), out.data());
        EXPECT_EQ(out[d], kOutPadding) << "wrote past the row";

        Config c;
        c.tq = 1;
        c.tk = c.key_length = n;
        c.heads = heads;
        c.head_dim = head_dim;
        const std::vector<float> block = RunBlock(c, q, d, k_block, d, v_block, d, d);
        const std::vector<double> expected =
            Reference(c, {q.data(), d}, {k_block.data(), d}, {v_block.data(), d});
        for (int x = 0; x < d; ++x) {
          EXPECT_NEAR(out[x], block[x], 1e-6f) << "element " << x;
          EXPECT_NEAR(out[x], expected[x], 2e-5 + 1e-5 * std::abs(expected[x])) << "element " << x;
        }
        if (HasFailure()) return;
      }
    }
  }
}

TEST(AttendRowTest, RepeatedPointersCountTwice) {
  // Two pointers to the same key/value row weigh it twice: with keys {a, a, b} the result equals
  // the weighted softmax by hand.
  const int d = 4;
  const std::vector<float> q = {1.0f, 0.0f, 0.5f, -1.0f};
  const std::vector<float> a_k = {0.5f, 1.0f, 0.0f, 0.0f}, b_k = {-1.0f, 0.0f, 2.0f, 1.0f};
  const std::vector<float> a_v = {1.0f, 2.0f, 3.0f, 4.0f}, b_v = {-4.0f, 0.0f, 4.0f, 8.0f};
  const float* keys[] = {a_k.data(), a_k.data(), b_k.data()};
  const float* values[] = {a_v.data(), a_v.data(), b_v.data()};
  AttentionShape shape;
  shape.num_heads = 1;
  shape.head_dim = d;
  shape.scale = 0.5f;
  float scores[3];
  float out[d];
  AttendRow(q.data(), keys, values, 3, shape, scores, out);
  const double sa = 0.5 * (0.5), sb = 0.5 * (-1.0 + 1.0 - 1.0);
  const double wa = 2 * std::exp(sa), wb = std::exp(sb);
  for (int x = 0; x < d; ++x) {
    EXPECT_NEAR(out[x], (wa * a_v[x] + wb * b_v[x]) / (wa + wb), 1e-6) << x;
  }
}

TEST(TransposeKeysTest, TransposesAndZeroPads) {
  std::mt19937 rng(31);
  for (int n : {1, 15, 16, 17, 40}) {
    for (int d : {4, 16, 24, 64}) {
      const int ldk = 2 * d + 3;  // keys inside a fused K/V buffer, NaN between them
      const std::vector<float> k = StridedRandom(n, d, ldk, rng);
      const int ldkt = TransposedKeyStride(n);
      ASSERT_GE(ldkt, n);
      ASSERT_EQ(ldkt % 16, 0);
      std::vector<float> kt(static_cast<size_t>(d) * ldkt, kNaN);
      TransposeKeys(k.data(), ldk, n, d, kt.data(), ldkt);
      for (int c = 0; c < d; ++c) {
        for (int j = 0; j < ldkt; ++j) {
          const float want = j < n ? k[static_cast<size_t>(j) * ldk + c] : 0.0f;
          ASSERT_EQ(kt[static_cast<size_t>(c) * ldkt + j], want)
              << "n=" << n << " d=" << d << " c=" << c << " j=" << j;
        }
      }
    }
  }
}

// AttendTransposed over keys transposed once, as the decoder keeps its cross-attention memory.
std::vector<float> RunTransposed(const Config& c, const std::vector<float>& q, int ldq,
                                 const std::vector<float>& k, int ldk, const std::vector<float>& v,
                                 int ldv, int ldo) {
  const int ldkt = TransposedKeyStride(c.tk);
  std::vector<float> kt(static_cast<size_t>(c.d()) * ldkt, kNaN);
  TransposeKeys(k.data(), ldk, c.tk, c.d(), kt.data(), ldkt);
  std::vector<float> out = FreshOutput(c, ldo);
  const AttentionShape shape = c.Shape();
  std::vector<float> scratch(AttendTransposedScratchFloats(c.tk), kNaN);
  AttendTransposed(q.data(), ldq, c.tq, kt.data(), ldkt, c.tk, v.data(), ldv, shape, scratch.data(),
                   out.data(), ldo);
  return out;
}

TEST(AttendTransposedTest, MatchesReference) {
  std::mt19937 rng(37);
  for (int tq : {1, 3, 4, 5, 9}) {
    for (int tk : {1, 7, 16, 25, 33}) {
      for (auto [heads, head_dim] : {std::pair{1, 4}, {2, 16}, {8, 64}, {3, 20}}) {
        Config c;
        c.tq = tq;
        c.tk = c.key_length = tk;
        c.heads = heads;
        c.head_dim = head_dim;
        const int d = c.d();
        // The decoder's layout: queries d apart, values inside a fused buffer, output d + 5 apart.
        const std::vector<float> q = StridedRandom(tq, d, d, rng);
        const std::vector<float> k = StridedRandom(tk, d, 2 * d, rng);
        const std::vector<float> v = StridedRandom(tk, d, 2 * d + 1, rng);
        const std::vector<float> out = RunTransposed(c, q, d, k, 2 * d, v, 2 * d + 1, d + 5);
        ExpectMatches(c, Reference(c, {q.data(), d}, {k.data(), 2 * d}, {v.data(), 2 * d + 1}), out,
                      d + 5);
        if (HasFailure()) return;
      }
    }
  }
}

TEST(AttendTransposedTest, RowsDoNotDependOnTheirNeighbours) {
  // A beam attends the same alone or with its sentence's other beams: every row of a call of 7
  // equals the same row attended alone, bit for bit.
  std::mt19937 rng(41);
  Config c;
  c.tq = 7;
  c.tk = c.key_length = 25;
  c.heads = 8;
  c.head_dim = 64;
  const int d = c.d();
  const std::vector<float> q = StridedRandom(c.tq, d, d, rng);
  const std::vector<float> k = StridedRandom(c.tk, d, d, rng);
  const std::vector<float> v = StridedRandom(c.tk, d, d, rng);
  const std::vector<float> together = RunTransposed(c, q, d, k, d, v, d, d);
  Config one = c;
  one.tq = 1;
  for (int i = 0; i < c.tq; ++i) {
    const std::vector<float> qi(q.begin() + static_cast<int64_t>(i) * d,
                                q.begin() + static_cast<int64_t>(i + 1) * d);
    const std::vector<float> alone = RunTransposed(one, qi, d, k, d, v, d, d);
    for (int x = 0; x < d; ++x) {
      ASSERT_EQ(alone[x], together[static_cast<size_t>(i) * d + x]) << "row " << i << " x " << x;
    }
  }
}

}  // namespace
}  // namespace rosetta
