#include "engine/attention.h"

// GCC 12's AVX-512 reduction intrinsics read a deliberately undefined register.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/blas.h"
#include "engine/cpu_features.h"
#include "engine/ops.h"
#include "engine/tail_mask.h"

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
    // Up to four chunks of the head at once: four independent FMA chains per value row instead
    // of one chain per chunk that waits on each FMA's latency (same order of sums per element).
    float* o = out + offset;
    for (int c0 = 0; c0 < chunks; c0 += 4) {
      const int count = std::min(4, chunks - c0);
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
      for (int j = 0; j < n; ++j) {
        const __m512 p = _mm512_set1_ps(scores[j]);
        const float* v = values[j] + offset + 16 * c0;
        for (int c = 0; c < 4; ++c) {
          if (c < count) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[c]);
        }
      }
      for (int c = 0; c < count; ++c) _mm512_storeu_ps(o + 16 * (c0 + c), acc[c]);
    }
  }
}

}  // namespace

void AttendRow(const float* query, const float* const* keys, const float* const* values, int n,
               const AttentionShape& shape, float* scores, float* out) {
  if (UseAvx512() && shape.head_dim % 16 == 0) {
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

// Query rows per register block of the AVX-512 block kernel: each K^T load feeds this many FMAs.
constexpr int kBlockRows = 4;
// Up to this many keys the AVX-512 block kernel replaces the GEMM path: embedding models' texts
// (at most 256 or 512 tokens) mostly stay on it, and K^T (d_model x 256 floats) stays in L2.
// Measured faster only at 32 keys (bench/embedding_bench); the limit is not tuned against
// OpenBLAS at longer blocks.
constexpr int kMaxKeysForAvx512 = 256;

int RoundUp16(int n) { return (n + 15) / 16 * 16; }

// Independent FMA chains per kernel call: kRows rows times kChainBlocks(kRows) blocks of 16
// columns. One or two rows (greedy search, small beams) would otherwise wait on each FMA's
// latency; from three rows on, the rows are enough (more blocks measured no faster there).
// Grouping blocks never changes the order in which one output sums its terms, so results do not
// depend on how many rows or blocks were taken together. bench/attention_bench, 8 heads of 64:
// one row over 25 keys 1.5x as fast as one chain, over 64 keys 2.4x; two rows 1.45x and 1.85x.
constexpr int kChainBlocks(int rows) { return rows <= 2 ? 4 : 1; }

// p[r][j0 + j] = scale * q[r] . k_(j0 + j) for j < 16 * kBlocks (kt already at column j0).
template <int kRows, int kBlocks>
__attribute__((target("avx512f"), always_inline)) inline void ScoreBlocks(const float* const* q,
                                                                          const float* kt, int ldkt,
                                                                          int dh, __m512 scale,
                                                                          float* p) {
  __m512 acc[kRows][kBlocks];
  for (int r = 0; r < kRows; ++r) {
    for (int b = 0; b < kBlocks; ++b) acc[r][b] = _mm512_setzero_ps();
  }
  for (int c = 0; c < dh; ++c) {
    const float* row = kt + static_cast<int64_t>(c) * ldkt;
    __m512 k[kBlocks];
    for (int b = 0; b < kBlocks; ++b) k[b] = _mm512_loadu_ps(row + 16 * b);
    for (int r = 0; r < kRows; ++r) {
      const __m512 x = _mm512_set1_ps(q[r][c]);
      for (int b = 0; b < kBlocks; ++b) acc[r][b] = _mm512_fmadd_ps(x, k[b], acc[r][b]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int b = 0; b < kBlocks; ++b) {
      _mm512_storeu_ps(p + r * ldkt + 16 * b, _mm512_mul_ps(acc[r][b], scale));
    }
  }
}

// Scores of kRows query rows (q[r], head offset applied) against the transposed keys kt
// ([dh x ldkt], zero past the last key): p[r][j] = scale * q[r] . k_j for j < ldkt.
template <int kRows>
__attribute__((target("avx512f"))) void ScoreRows(const float* const* q, const float* kt, int ldkt,
                                                  int dh, float scale, float* p) {
  const __m512 s = _mm512_set1_ps(scale);
  constexpr int kBlocks = kChainBlocks(kRows);
  int j = 0;
  if constexpr (kBlocks >= 4) {
    for (; j + 64 <= ldkt; j += 64) ScoreBlocks<kRows, 4>(q, kt + j, ldkt, dh, s, p + j);
  }
  if constexpr (kBlocks >= 2) {
    for (; j + 32 <= ldkt; j += 32) ScoreBlocks<kRows, 2>(q, kt + j, ldkt, dh, s, p + j);
  }
  for (; j < ldkt; j += 16) ScoreBlocks<kRows, 1>(q, kt + j, ldkt, dh, s, p + j);
}

// out[r][c0 + c] = sum_{j < n} p[r][j] v_j[c0 + c] for c < 16 * kBlocks, columns from dh on
// masked off.
template <int kRows, int kBlocks>
__attribute__((target("avx512f"), always_inline)) inline void WeightBlocks(const float* p, int ldp,
                                                                           const float* v, int ldv,
                                                                           int n, int c0, int dh,
                                                                           float* const* out) {
  __mmask16 mask[kBlocks];
  __m512 acc[kRows][kBlocks];
  for (int b = 0; b < kBlocks; ++b) {
    mask[b] = TailMask(dh - c0 - 16 * b);
    for (int r = 0; r < kRows; ++r) acc[r][b] = _mm512_setzero_ps();
  }
  for (int j = 0; j < n; ++j) {
    const float* row = v + static_cast<int64_t>(j) * ldv + c0;
    __m512 value[kBlocks];
    for (int b = 0; b < kBlocks; ++b) value[b] = _mm512_maskz_loadu_ps(mask[b], row + 16 * b);
    for (int r = 0; r < kRows; ++r) {
      const __m512 x = _mm512_set1_ps(p[r * ldp + j]);
      for (int b = 0; b < kBlocks; ++b) acc[r][b] = _mm512_fmadd_ps(x, value[b], acc[r][b]);
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int b = 0; b < kBlocks; ++b) {
      _mm512_mask_storeu_ps(out[r] + c0 + 16 * b, mask[b], acc[r][b]);
    }
  }
}

// out[r] = sum_{j < n} p[r][j] v_j over kRows rows of probabilities (rows ldp apart), head offset
// applied to v and out. Reads only value rows j < n.
template <int kRows>
__attribute__((target("avx512f"))) void WeightValues(const float* p, int ldp, const float* v,
                                                     int ldv, int n, int dh, float* const* out) {
  constexpr int kBlocks = kChainBlocks(kRows);
  const int blocks = (dh + 15) / 16;
  int b = 0;
  if constexpr (kBlocks >= 4) {
    for (; b + 4 <= blocks; b += 4) WeightBlocks<kRows, 4>(p, ldp, v, ldv, n, 16 * b, dh, out);
  }
  if constexpr (kBlocks >= 2) {
    for (; b + 2 <= blocks; b += 2) WeightBlocks<kRows, 2>(p, ldp, v, ldv, n, 16 * b, dh, out);
  }
  for (; b < blocks; ++b) WeightBlocks<kRows, 1>(p, ldp, v, ldv, n, 16 * b, dh, out);
}

// Transposes 16 rows of 16 floats in registers.
__attribute__((target("avx512f"))) inline void Transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 16; i += 8) {
    for (int k = 0; k < 4; ++k) {
      t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
      t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xdd);
    }
  }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
  }
}

// kt[c][j] = k[j][c] for j < tk, c < d; zero for tk <= j < ldkt (a multiple of 16).
__attribute__((target("avx512f"))) void TransposeKeysAvx512(const float* k, int ldk, int tk, int d,
                                                            float* kt, int ldkt) {
  for (int j0 = 0; j0 < ldkt; j0 += 16) {
    for (int c0 = 0; c0 < d; c0 += 16) {
      const __mmask16 columns = TailMask(d - c0);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = j0 + i < tk
                   ? _mm512_maskz_loadu_ps(columns, k + static_cast<int64_t>(j0 + i) * ldk + c0)
                   : _mm512_setzero_ps();
      }
      Transpose16x16(r);
      for (int i = 0; i < 16 && c0 + i < d; ++i) {
        _mm512_storeu_ps(kt + static_cast<int64_t>(c0 + i) * ldkt + j0, r[i]);
      }
    }
  }
}

// Attention of a block over keys already transposed (kt: [d x ldkt], zero past the last key),
// per head, blocks of kBlockRows queries: scores by broadcast FMAs, softmax over each row's visible
// keys, weighted sum of the visible value rows. Causal rows are weighted one by one, so no row
// reads a value it may not see. `p` holds kBlockRows * ldkt floats.
__attribute__((target("avx512f"))) void AttendTransposedBlockAvx512(const BlockAttentionArgs& a,
                                                                    const AttentionShape& shape,
                                                                    const float* kt, int ldkt,
                                                                    float* p) {
  const int dh = shape.head_dim;
  const int tk = std::min(a.tk, a.key_length);
  for (int h = 0; h < shape.num_heads; ++h) {
    const int offset = h * dh;
    const float* kt_h = kt + static_cast<int64_t>(offset) * ldkt;
    const float* v = a.v + offset;
    for (int i0 = 0; i0 < a.tq; i0 += kBlockRows) {
      const int rows = std::min(kBlockRows, a.tq - i0);
      const float* q[kBlockRows];
      float* out[kBlockRows];
      for (int r = 0; r < rows; ++r) {
        q[r] = a.q + static_cast<int64_t>(i0 + r) * a.ldq + offset;
        out[r] = a.out + static_cast<int64_t>(i0 + r) * a.ldo + offset;
      }
      // As many rows as the block has (a greedy row alone does a quarter of the FMAs of four);
      // each row's scores are summed in the same order whatever the block's size.
      switch (rows) {
        case 1:
          ScoreRows<1>(q, kt_h, ldkt, dh, shape.scale, p);
          break;
        case 2:
          ScoreRows<2>(q, kt_h, ldkt, dh, shape.scale, p);
          break;
        case 3:
          ScoreRows<3>(q, kt_h, ldkt, dh, shape.scale, p);
          break;
        default:
          ScoreRows<kBlockRows>(q, kt_h, ldkt, dh, shape.scale, p);
          break;
      }
      int visible[kBlockRows];
      for (int r = 0; r < rows; ++r) {
        visible[r] = std::min(VisibleKeys(a, i0 + r), tk);
        Softmax(p + r * ldkt, visible[r]);
      }
      if (!a.causal && rows == kBlockRows) {
        WeightValues<kBlockRows>(p, ldkt, v, a.ldv, tk, dh, out);
      } else {
        for (int r = 0; r < rows; ++r) {
          WeightValues<1>(p + r * ldkt, ldkt, v, a.ldv, visible[r], dh, &out[r]);
        }
      }
    }
  }
}

// Short blocks without BLAS: K^T of every head at once into scratch ([d x ldkt], zero past the
// last key), 16 x 16 tiles at a time (each key row is read as one contiguous stream; head by head,
// the scattered row reads were latency-bound cache misses), then the transposed-key kernel.
__attribute__((target("avx512f"))) void AttendBlockAvx512(const BlockAttentionArgs& a,
                                                          const AttentionShape& shape,
                                                          float* scratch) {
  const int d = shape.num_heads * shape.head_dim;
  const int tk = std::min(a.tk, a.key_length);
  const int ldkt = RoundUp16(tk);
  float* kt = scratch;
  TransposeKeysAvx512(a.k, a.ldk, tk, d, kt, ldkt);
  AttendTransposedBlockAvx512(a, shape, kt, ldkt, scratch + static_cast<int64_t>(d) * ldkt);
}

bool UseAvx512Block(int tk) { return UseAvx512() && tk <= kMaxKeysForAvx512; }

}  // namespace

int64_t AttendBlockScratchFloats(int tq, int tk, const AttentionShape& shape) {
  const int64_t gemm = static_cast<int64_t>(tq) * tk;
  if (!UseAvx512Block(tk)) return gemm;
  const int64_t ldkt = RoundUp16(tk);
  return std::max(gemm,
                  (static_cast<int64_t>(shape.num_heads) * shape.head_dim + kBlockRows) * ldkt);
}

int TransposedKeyStride(int n) { return RoundUp16(n); }

void TransposeKeys(const float* k, int ldk, int n, int d, float* kt, int ldkt) {
  if (UseAvx512()) {
    TransposeKeysAvx512(k, ldk, n, d, kt, ldkt);
    return;
  }
  for (int c = 0; c < d; ++c) {
    float* row = kt + static_cast<int64_t>(c) * ldkt;
    for (int j = 0; j < n; ++j) row[j] = k[static_cast<int64_t>(j) * ldk + c];
    std::fill(row + n, row + ldkt, 0.0f);
  }
}

int64_t AttendTransposedScratchFloats(int n) {
  return static_cast<int64_t>(kBlockRows) * TransposedKeyStride(n);
}

void AttendTransposed(const float* q, int ldq, int tq, const float* kt, int ldkt, int n,
                      const float* v, int ldv, const AttentionShape& shape, float* scratch,
                      float* out, int ldo) {
  if (UseAvx512()) {
    BlockAttentionArgs a;
    a.q = q;
    a.ldq = ldq;
    a.v = v;
    a.ldv = ldv;
    a.out = out;
    a.ldo = ldo;
    a.tq = tq;
    a.tk = a.key_length = n;
    AttendTransposedBlockAvx512(a, shape, kt, ldkt, scratch);
    return;
  }
  const int dh = shape.head_dim;
  for (int i = 0; i < tq; ++i) {
    for (int h = 0; h < shape.num_heads; ++h) {
      const int offset = h * dh;
      const float* q_h = q + static_cast<int64_t>(i) * ldq + offset;
      // Key by key in the inner loop: contiguous rows of K^T (the same order of sums per key).
      std::fill(scratch, scratch + n, 0.0f);
      for (int c = 0; c < dh; ++c) {
        const float* kt_row = kt + static_cast<int64_t>(offset + c) * ldkt;
        for (int j = 0; j < n; ++j) scratch[j] += q_h[c] * kt_row[j];
      }
      for (int j = 0; j < n; ++j) scratch[j] *= shape.scale;
      Softmax(scratch, n);
      float* o = out + static_cast<int64_t>(i) * ldo + offset;
      std::memset(o, 0, sizeof(float) * dh);
      for (int j = 0; j < n; ++j)
        Axpy(scratch[j], v + static_cast<int64_t>(j) * ldv + offset, o, dh);
    }
  }
}

void AttendBlock(const BlockAttentionArgs& args, const AttentionShape& shape, float* scratch) {
  if (UseAvx512Block(args.tk)) {
    AttendBlockAvx512(args, shape, scratch);
    return;
  }
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
