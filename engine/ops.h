// Stateless element-wise and row-wise operators on float32 row-major buffers.
//
// Every function writes into caller-provided memory and allocates nothing. Input and output may be
// the same buffer where a parameter is named `x` and documented as in place. Thread-safe.
#ifndef ROSETTA_ENGINE_OPS_H_
#define ROSETTA_ENGINE_OPS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta {

enum class Activation {
  kRelu,
  kGelu,      // exact: x * Phi(x), with erf
  kGeluTanh,  // the tanh approximation ("gelu_new", "gelu_pytorch_tanh")
  kSilu,      // x * sigmoid(x), also called swish
};

// Parses the names used by Hugging Face configs and CTranslate2 specs ("relu", "gelu", "swish"...).
absl::StatusOr<Activation> ParseActivation(absl::string_view name);
absl::string_view ActivationName(Activation activation);

// x[i] = f(x[i]) for i in [0, n).
void ApplyActivation(Activation activation, float* x, int64_t n);

// x[r][c] += bias[c] for every row r of a [rows x cols] matrix.
void AddBias(float* x, const float* bias, int64_t rows, int64_t cols);

// out[i] = a[i] + b[i]. `out` may alias `a` or `b`.
void Add(const float* a, const float* b, float* out, int64_t n);

// out[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta, over each row of `cols` values.
// `out` may alias `x`.
void LayerNorm(const float* x, const float* gamma, const float* beta, float eps, int64_t rows,
               int64_t cols, float* out);

// out[r] = LayerNorm(a[r] + b[r]) with the same gamma, beta and eps: the residual connection and
// the norm of a post-norm Transformer in one pass over memory. `out` may alias `a` or `b`.
void AddLayerNorm(const float* a, const float* b, const float* gamma, const float* beta, float eps,
                  int64_t rows, int64_t cols, float* out);

// In-place softmax over the first `n` values of `x`.
void Softmax(float* x, int64_t n);

// In-place log-softmax over each row of a [rows x cols] matrix.
void LogSoftmax(float* x, int64_t rows, int64_t cols);

// The log-normaliser of a row of logits without writing it: on return
// log_softmax(x)[i] == (x[i] - *max_value) - *log_sum, computed in that order for precision.
void LogSoftmaxNormalizer(const float* x, int64_t n, float* max_value, float* log_sum);

// Dot product of two vectors of length n.
float Dot(const float* a, const float* b, int64_t n);

// y[i] += alpha * x[i] for i in [0, n).
void Axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_OPS_H_
