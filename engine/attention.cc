#include "engine/attention.h"

// GCC 12's AVX-512 reduction intrinsics read a deliberately undefined register.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/blas.h"
#include "engine/ops.h"

namespace rosetta {

namespace {

// AttendRow for head dimensions that are multiples of 16, with the per-key dot products and
// weighted sums inlined (the generic path calls Dot and Axpy once per key and head).
__attribute__((target("avx512f"))) void AttendRowAvx512(const float* query,
                                                        const float* const* keys,
                                                        const float* const* values, int n,
                                                        const AttentionShape& shape, float* scores,
                                                        float* out) {
  const int dh = shape.head_dim;
  const int chunks = dh / 16;
  for (int h = 0; h < shape.num_heads; ++h) {
    const int offset = h * dh;
    const float* q = query + offset;
    for (int j = 0; j < n; ++j) {
      const float* k = keys[j] + offset;
      __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(q), _mm512_loadu_ps(k));
      for (int c = 1; c < chunks; ++c) {
        sum = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * c), _mm512_loadu_ps(k + 16 * c), sum);
      }
      scores[j] = _mm512_reduce_add_ps(sum) * shape.scale;
    }
    Softmax(scores, n);
    float* o = out + offset;
    for (int c = 0; c < chunks; ++c) {
      __m512 acc = _mm512_setzero_ps();
      for (int j = 0; j < n; ++j) {
        acc = _mm512_fmadd_ps(_mm512_set1_ps(scores[j]),
                              _mm512_loadu_ps(values[j] + offset + 16 * c), acc);
      }
      _mm512_storeu_ps(o + 16 * c, acc);
    }
  }
}

const bool kAttentionAvx512 = __builtin_cpu_supports("avx512f");

}  // namespace

void AttendRow(const float* query, const float* const* keys, const float* const* values, int n,
               const AttentionShape& shape, float* scores, float* out) {
  if (kAttentionAvx512 && shape.head_dim % 16 == 0) {
    AttendRowAvx512(query, keys, values, n, shape, scores, out);
    return;
  }
  const int dh = shape.head_dim;
  for (int h = 0; h < shape.num_heads; ++h) {
    const int offset = h * dh;
    const float* q = query + offset;
    for (int j = 0; j < n; ++j) scores[j] = Dot(q, keys[j] + offset, dh) * shape.scale;
    Softmax(scores, n);
    float* o = out + offset;
    std::memset(o, 0, sizeof(float) * dh);
    for (int j = 0; j < n; ++j) Axpy(scores[j], values[j] + offset, o, dh);
  }
}

namespace {

// Number of keys query row i may see under the masks.
int VisibleKeys(const BlockAttentionArgs& a, int i) {
  int visible = a.key_length;
  if (a.causal) visible = std::min(visible, i + a.causal_offset + 1);
  return visible;
}

// Few query rows: plain loops beat GEMM calls.
void AttendBlockByRows(const BlockAttentionArgs& a, const AttentionShape& shape, float* scratch) {
  const int dh = shape.head_dim;
  for (int i = 0; i < a.tq; ++i) {
    const int visible = VisibleKeys(a, i);
    const float* q_row = a.q + static_cast<int64_t>(i) * a.ldq;
    float* o_row = a.out + static_cast<int64_t>(i) * a.ldo;
    for (int h = 0; h < shape.num_heads; ++h) {
      const int offset = h * dh;
      for (int j = 0; j < visible; ++j) {
        scratch[j] =
            Dot(q_row + offset, a.k + static_cast<int64_t>(j) * a.ldk + offset, dh) * shape.scale;
      }
      Softmax(scratch, visible);
      float* o = o_row + offset;
      std::memset(o, 0, sizeof(float) * dh);
      for (int j = 0; j < visible; ++j) {
        Axpy(scratch[j], a.v + static_cast<int64_t>(j) * a.ldv + offset, o, dh);
      }
    }
  }
}

// Many query rows: per head, scores = Q_h K_h^T and out_h = P V_h as GEMMs.
void AttendBlockByGemm(const BlockAttentionArgs& a, const AttentionShape& shape, float* scratch) {
  const int dh = shape.head_dim;
  const int tk = std::min(a.tk, a.key_length);  // keys past key_length are never seen
  for (int h = 0; h < shape.num_heads; ++h) {
    const int offset = h * dh;
    Gemm(false, true, a.tq, tk, dh, shape.scale, a.q + offset, a.ldq, a.k + offset, a.ldk, 0.0f,
         scratch, tk);
    for (int i = 0; i < a.tq; ++i) {
      float* row = scratch + static_cast<int64_t>(i) * tk;
      const int visible = VisibleKeys(a, i);
      Softmax(row, visible);
      std::fill(row + visible, row + tk, 0.0f);
    }
    Gemm(false, false, a.tq, dh, tk, 1.0f, scratch, tk, a.v + offset, a.ldv, 0.0f, a.out + offset,
         a.ldo);
  }
}

}  // namespace

void AttendBlock(const BlockAttentionArgs& args, const AttentionShape& shape, float* scratch) {
  // Below this many query rows, per-row loops are faster than two small GEMMs per head.
  constexpr int kMinRowsForGemm = 8;
  // Causal attention reads only the visible keys row by row: the GEMM path would multiply hidden
  // value rows by zero probabilities, and 0 * inf is NaN.
  if (args.tq < kMinRowsForGemm || args.causal) {
    AttendBlockByRows(args, shape, scratch);
  } else {
    AttendBlockByGemm(args, shape, scratch);
  }
}

}  // namespace rosetta
