#include "engine/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

// Hot loops are compiled for AVX-512 and AVX2 besides the baseline; the loader picks the best
// clone for the CPU at run time, so one binary stays portable.
#define ROSETTA_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace rosetta {

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "relu") return Activation::kRelu;
  if (lower == "gelu" || lower == "gelu_python") return Activation::kGelu;
  if (lower == "gelu_new" || lower == "gelu_fast" || lower == "gelu_pytorch_tanh" ||
      lower == "gelutanh") {
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

static void Gelu(float* x, int64_t n) {
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

static void Silu(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
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

ROSETTA_MULTIVERSION
void LayerNorm(const float* x, const float* gamma, const float* beta, float eps, int64_t rows,
               int64_t cols, float* out) {
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

ROSETTA_MULTIVERSION
void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
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

ROSETTA_MULTIVERSION
void LogSoftmax(float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float max_value = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < cols; ++c) max_value = std::max(max_value, row[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(row[c] - max_value);
    const float log_z = max_value + std::log(sum);
    for (int64_t c = 0; c < cols; ++c) row[c] -= log_z;
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
