#include "engine/ops.h"

// GCC 12's AVX-512 reduction intrinsics read a deliberately undefined register (_mm512_undefined)
// and trip -Wuninitialized in its own header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "engine/cpu_features.h"
#include "engine/tail_mask.h"

// Hot loops are compiled for AVX-512 and AVX2 besides the baseline; the loader picks the best
// clone for the CPU at run time, so one binary stays portable. Not under ThreadSanitizer: the
// loader runs the clones' resolvers before the sanitizer's runtime is ready, and they crash.
#if defined(__SANITIZE_THREAD__)
#define ROSETTA_MULTIVERSION
#else
#define ROSETTA_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

namespace rosetta {

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "relu") return Activation::kRelu;
  if (lower == "gelu" || lower == "gelu_python") return Activation::kGelu;
  if (lower == "gelu_new" || lower == "gelu_fast" || lower == "gelu_pytorch_tanh" ||
      lower == "gelu_tanh" || lower == "gelutanh") {
    return Activation::kGeluTanh;
  }
  if (lower == "swish" || lower == "silu") return Activation::kSilu;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported activation \"", name,
                   "\" (supported: relu, gelu, gelu_new, gelu_pytorch_tanh, swish, silu)"));
}

absl::string_view ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kRelu:
      return "relu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kSilu:
      return "silu";
  }
  return "unknown";
}

ROSETTA_MULTIVERSION
static void Relu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

namespace {
void GeluAvx512(float* x, int64_t n);
}  // namespace

static void Gelu(float* x, int64_t n) {
  if (UseAvx512()) return GeluAvx512(x, n);
  constexpr float kInvSqrt2 = 0.70710678118654752f;
  for (int64_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInvSqrt2));
}

static void GeluTanh(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.79788456080286536f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

static void SiluScalar(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
}

namespace {
void SiluAvx512(float* x, int64_t n);
}  // namespace

static void Silu(float* x, int64_t n) {
  if (UseAvx512()) return SiluAvx512(x, n);
  SiluScalar(x, n);
}

void ApplyActivation(Activation activation, float* x, int64_t n) {
  switch (activation) {
    case Activation::kRelu:
      return Relu(x, n);
    case Activation::kGelu:
      return Gelu(x, n);
    case Activation::kGeluTanh:
      return GeluTanh(x, n);
    case Activation::kSilu:
      return Silu(x, n);
  }
}

ROSETTA_MULTIVERSION
void AddBias(float* x, const float* bias, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

ROSETTA_MULTIVERSION
void Add(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

namespace {
void AddLayerNormAvx512(const float* a, const float* b, const float* gamma, const float* beta,
                        float eps, int64_t rows, int64_t cols, float* out);
}  // namespace

ROSETTA_MULTIVERSION
static void LayerNormScalar(const float* x, const float* gamma, const float* beta, float eps,
                            int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * cols;
    float* o = out + r * cols;
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) sum += in[c];
    const float mean = sum / static_cast<float>(cols);
    float sq = 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float d = in[c] - mean;
      sq += d * d;
    }
    const float inv_std = 1.0f / std::sqrt(sq / static_cast<float>(cols) + eps);
    for (int64_t c = 0; c < cols; ++c) o[c] = (in[c] - mean) * inv_std * gamma[c] + beta[c];
  }
}

void LayerNorm(const float* x, const float* gamma, const float* beta, float eps, int64_t rows,
               int64_t cols, float* out) {
  if (UseAvx512()) return AddLayerNormAvx512(x, nullptr, gamma, beta, eps, rows, cols, out);
  LayerNormScalar(x, gamma, beta, eps, rows, cols, out);
}

void AddLayerNorm(const float* a, const float* b, const float* gamma, const float* beta, float eps,
                  int64_t rows, int64_t cols, float* out) {
  if (UseAvx512()) return AddLayerNormAvx512(a, b, gamma, beta, eps, rows, cols, out);
  Add(a, b, out, rows * cols);
  LayerNormScalar(out, gamma, beta, eps, rows, cols, out);
}

namespace {

// exp(x) for 16 floats: x = n ln2 + r with |r| <= ln2/2, exp(r) by its degree-6 Taylor polynomial
// (relative error below 2e-7), times 2^n with scalef. Inputs below -104 give 0, -inf included.
__attribute__((target("avx512f"))) inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(88.72f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f"))) float MaxAvx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    m = _mm512_mask_max_ps(m, mask, m, _mm512_maskz_loadu_ps(mask, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

// Returns sum(exp(x[i] - shift)); writes the terms to `out` when it is not null.
__attribute__((target("avx512f"))) float SumExpAvx512(const float* x, int64_t n, float shift,
                                                      float* out) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), s));
    sum = _mm512_mask_add_ps(sum, mask, sum, e);
    if (out != nullptr) _mm512_mask_storeu_ps(out + i, mask, e);
  }
  return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx512f"))) void ScaleAvx512(float* x, int64_t n, float scale) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    _mm512_mask_storeu_ps(x + i, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), s));
  }
}

// x[i] = (x[i] - first) - second: subtracting the maximum first keeps the precision of large
// logits (max + log(sum) rounded to a float would lose up to half an ulp of the maximum).
__attribute__((target("avx512f"))) void SubtractTwiceAvx512(float* x, int64_t n, float first,
                                                            float second) {
  const __m512 a = _mm512_set1_ps(first);
  const __m512 b = _mm512_set1_ps(second);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), a);
    _mm512_mask_storeu_ps(x + i, mask, _mm512_sub_ps(v, b));
  }
}

// Per row: the sum a + b written to `out` while summing it, then the variance, then the affine
// normalisation: three passes over a row that stays in L1. `b` may be null (plain LayerNorm).
__attribute__((target("avx512f"))) void AddLayerNormAvx512(const float* a, const float* b,
                                                           const float* gamma, const float* beta,
                                                           float eps, int64_t rows, int64_t cols,
                                                           float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = a + r * cols;
    const float* y = b != nullptr ? b + r * cols : nullptr;
    float* o = out + r * cols;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = TailMask(cols - c);
      __m512 v = _mm512_maskz_loadu_ps(mask, x + c);
      if (y != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, y + c));
      _mm512_mask_storeu_ps(o + c, mask, v);
      sum = _mm512_add_ps(sum, v);
    }
    const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / static_cast<float>(cols));
    __m512 sq = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = TailMask(cols - c);
      const __m512 d = _mm512_maskz_sub_ps(mask, _mm512_maskz_loadu_ps(mask, o + c), mean);
      sq = _mm512_fmadd_ps(d, d, sq);
    }
    const __m512 inv_std =
        _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(sq) / static_cast<float>(cols) + eps));
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 mask = TailMask(cols - c);
      const __m512 d =
          _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, o + c), mean), inv_std);
      const __m512 v = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(mask, gamma + c),
                                       _mm512_maskz_loadu_ps(mask, beta + c));
      _mm512_mask_storeu_ps(o + c, mask, v);
    }
  }
}

// x / (1 + exp(-x)).
__attribute__((target("avx512f"))) void SiluAvx512(float* x, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
    _mm512_mask_storeu_ps(x + i, mask, _mm512_div_ps(v, _mm512_add_ps(one, e)));
  }
}

// x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), with erf from Abramowitz and Stegun 7.1.26 (absolute
// error below 1.5e-7, as PyTorch's vectorised erf): 1 + erf(z) = 2 - q for z >= 0 and q for z < 0,
// where q = poly(t) exp(-z^2), t = 1 / (1 + p |z|); negative inputs keep their small values.
__attribute__((target("avx512f"))) void GeluAvx512(float* x, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 two = _mm512_set1_ps(2.0f);
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 inv_sqrt2 = _mm512_set1_ps(0.70710678118654752f);
  const __m512 p = _mm512_set1_ps(0.3275911f);
  const __m512 a1 = _mm512_set1_ps(0.254829592f);
  const __m512 a2 = _mm512_set1_ps(-0.284496736f);
  const __m512 a3 = _mm512_set1_ps(1.421413741f);
  const __m512 a4 = _mm512_set1_ps(-1.453152027f);
  const __m512 a5 = _mm512_set1_ps(1.061405429f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = TailMask(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
    const __m512 z = _mm512_mul_ps(v, inv_sqrt2);
    const __m512 abs_z = _mm512_abs_ps(z);
    const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(p, abs_z, one));
    __m512 poly = _mm512_fmadd_ps(a5, t, a4);
    poly = _mm512_fmadd_ps(poly, t, a3);
    poly = _mm512_fmadd_ps(poly, t, a2);
    poly = _mm512_fmadd_ps(poly, t, a1);
    poly = _mm512_mul_ps(poly, t);
    const __m512 q =
        _mm512_mul_ps(poly, Exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z)));
    const __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 one_plus_erf = _mm512_mask_blend_ps(negative, _mm512_sub_ps(two, q), q);
    _mm512_mask_storeu_ps(x + i, mask, _mm512_mul_ps(_mm512_mul_ps(half, v), one_plus_erf));
  }
}

void SoftmaxScalar(float* x, int64_t n) {
  float max_value = x[0];
  for (int64_t i = 1; i < n; ++i) max_value = std::max(max_value, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  if (!UseAvx512()) return SoftmaxScalar(x, n);
  const float max_value = MaxAvx512(x, n);
  const float sum = SumExpAvx512(x, n, max_value, x);
  ScaleAvx512(x, n, 1.0f / sum);
}

void LogSoftmaxNormalizer(const float* x, int64_t n, float* max_value, float* log_sum) {
  if (UseAvx512()) {
    *max_value = MaxAvx512(x, n);
    *log_sum = std::log(SumExpAvx512(x, n, *max_value, nullptr));
    return;
  }
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(x[i] - m);
  *max_value = m;
  *log_sum = std::log(sum);
}

void LogSoftmax(float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float max_value, log_sum;
    LogSoftmaxNormalizer(row, cols, &max_value, &log_sum);
    if (UseAvx512()) {
      SubtractTwiceAvx512(row, cols, max_value, log_sum);
    } else {
      for (int64_t c = 0; c < cols; ++c) row[c] = (row[c] - max_value) - log_sum;
    }
  }
}

ROSETTA_MULTIVERSION
float Dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

ROSETTA_MULTIVERSION
void Axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace rosetta
