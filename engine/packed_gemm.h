// A GEMM for few rows against fixed weights: y[m x n] = x[m x k] W^T + b, with W packed once, at
// load time, into panels that the AVX-512 kernel streams contiguously.
//
// Why: a decoder step multiplies a handful of rows (the running beams) by every weight matrix.
// OpenBLAS repacks the whole weight matrix on each call, which costs as much as the arithmetic when
// m is small. Packing once removes that cost. Large m (the encoder) stays on OpenBLAS.
#ifndef ROSETTA_ENGINE_PACKED_GEMM_H_
#define ROSETTA_ENGINE_PACKED_GEMM_H_

#include "engine/aligned_vector.h"
#include "engine/thread_pool.h"

namespace rosetta {

// W [n x k] in panels of kPackedPanelWidth output columns: panel p is k rows of kPackedPanelWidth
// floats, data[p][kk][j] = W[p * width + j][kk], zero past n. The bias is padded the same way.
inline constexpr int kPackedPanelWidth = 32;

struct PackedWeights {
  int n = 0;
  int k = 0;
  int panels = 0;
  AlignedVector<float> data;
  AlignedVector<float> bias;  // empty when the layer has no bias
};

// Whether this CPU runs the packed kernel (AVX-512F). Without it, callers use Gemm.
bool PackedGemmSupported();

// REQUIRES: w is [n x k] row-major; bias is null or has n values.
PackedWeights PackWeights(const float* w, const float* bias, int n, int k);

// y[m x n] = x[m x k] W^T (+ bias). Rows of x and y are ldx and ldy floats apart; x is read in
// place (no per-call copy) and only the first n columns of y are written. Splits the work (pairs of
// panels x blocks of rows) across `pool`'s threads (null: the calling thread only). Thread-safe:
// concurrent calls, each with its own pool, share no mutable state. REQUIRES:
// PackedGemmSupported().
void PackedLinear(const float* x, int m, int ldx, const PackedWeights& w, float* y, int ldy,
                  ThreadPool* pool);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_PACKED_GEMM_H_
