// A GEMM against fixed weights: y[m x n] = x[m x k] W^T + b, with W packed once, at load time,
// into panels that the AVX-512 kernel streams contiguously.
//
// Why: a decoder step multiplies a handful of rows (the running beams) by every weight matrix.
// OpenBLAS repacks the whole weight matrix on each call, which costs as much as the arithmetic when
// m is small. Packing once removes that cost; at large m the kernel keeps up with OpenBLAS
// (bench/gemm_bench), so it serves every row count.
#ifndef ROSETTA_ENGINE_PACKED_GEMM_H_
#define ROSETTA_ENGINE_PACKED_GEMM_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/aligned_vector.h"
#include "engine/thread_pool.h"

namespace rosetta {

// How the packed layers multiply.
enum class ComputeType {
  kFloat32,   // float32 weights and inputs, float32 FMAs
  kBfloat16,  // weights and inputs rounded to bfloat16 (to nearest even), float32 sums of
              // products (AVX512_BF16's dot products: twice the float32 rate, half the bytes)
  kInt8,      // weights quantized to int8 per output column, inputs per row at each call (scale:
              // the largest |value| / 127), int32 sums (AVX512_VNNI: four times the float32
              // rate, a quarter of the bytes)
};

// "float32" / "bfloat16".
absl::string_view ComputeTypeName(ComputeType type);
absl::StatusOr<ComputeType> ParseComputeType(absl::string_view name);
// So that tools can declare ABSL_FLAG(rosetta::ComputeType, ...).
bool AbslParseFlag(absl::string_view text, ComputeType* type, std::string* error);
std::string AbslUnparseFlag(ComputeType type);

// W [n x k] in panels of kPackedPanelWidth output columns, zero past n. float32: panel p is k rows
// of kPackedPanelWidth floats, data[p][kk][j] = W[p * width + j][kk]. bfloat16: panel p is
// ceil(k / 2) rows of kPackedPanelWidth pairs, data_bf16[p][kk / 2][j][kk % 2] = W[p * width +
// j][kk] (zero past k), the layout of AVX512_BF16's pairwise dot products. The bias (float32) is
// padded to whole panels.
inline constexpr int kPackedPanelWidth = 32;

struct PackedWeights {
  ComputeType type = ComputeType::kFloat32;
  int n = 0;
  int k = 0;
  int panels = 0;
  AlignedVector<float> data;          // kFloat32
  AlignedVector<uint16_t> data_bf16;  // kBfloat16
  // kInt8: panel p is ceil(k / 4) rows of kPackedPanelWidth quads, data_int8[p][kk / 4][j][kk % 4]
  // = round(W[p * width + j][kk] / column_scales[p * width + j]) (zero past n and k);
  // column_offsets[j] = 128 x the sum of column j's int8 weights (the kernel's inputs are stored
  // plus 128, as unsigned bytes).
  AlignedVector<int8_t> data_int8;
  AlignedVector<float> column_scales;
  AlignedVector<int32_t> column_offsets;
  AlignedVector<float> bias;  // empty when the layer has no bias
};

// Whether this CPU runs the packed kernel (AVX-512F). Without it, callers use Gemm.
bool PackedGemmSupported();
// Whether it runs the bfloat16 kernel too (AVX-512F, AVX512BW and AVX512_BF16).
bool PackedBfloat16Supported();
// Whether it runs the int8 kernel too (AVX-512F, AVX512BW and AVX512_VNNI).
bool PackedInt8Supported();
// OK when this CPU can compute in `type`; otherwise FAILED_PRECONDITION naming what it lacks.
absl::Status CheckComputeType(ComputeType type);

// REQUIRES: w is [n x k] row-major; bias is null or has n values.
PackedWeights PackWeights(const float* w, const float* bias, int n, int k);
// The same packed in `type` directly, a panel at a time: equal to PackWeights then
// ConvertToBfloat16 or ConvertToInt8, without the float32 panels of the whole matrix in between.
PackedWeights PackWeights(const float* w, const float* bias, int n, int k, ComputeType type);

// Repacks float32 panels as bfloat16 (rounded to nearest even) and frees the float32 ones.
// REQUIRES: w.type == kFloat32.
void ConvertToBfloat16(PackedWeights& w);
// Repacks float32 panels as int8 with a scale per output column and frees the float32 ones.
// REQUIRES: w.type == kFloat32.
void ConvertToInt8(PackedWeights& w);

// bfloat16 nearest to f, ties to even (NaN stays NaN).
uint16_t ToBfloat16(float f);

// y[m x n] = x[m x k] W^T (+ bias). Rows of x and y are ldx and ldy floats apart; x is read in
// place (no per-call copy) and only the first n columns of y are written. Splits the work (pairs of
// panels x blocks of rows) across `pool`'s threads (null: the calling thread only). Thread-safe:
// concurrent calls, each with its own pool, share no mutable state. bfloat16 weights: x's rows are
// rounded to bfloat16 first; int8 weights: x's rows are quantized to int8, each with its own
// scale. REQUIRES: PackedGemmSupported(), and PackedBfloat16Supported() or PackedInt8Supported()
// for those weights.
void PackedLinear(const float* x, int m, int ldx, const PackedWeights& w, float* y, int ldy,
                  ThreadPool* pool);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_PACKED_GEMM_H_
