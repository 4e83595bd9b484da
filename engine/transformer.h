// The forward pass of a Transformer encoder-decoder ("Attention Is All You Need"), batched.
//
// The encoder takes a packed batch: the token rows of every sentence back to back, no padding rows,
// with `offsets` marking where each sentence starts; attention is confined to each sentence (its
// padding mask). The decoder runs one step for any set of rows (beams of any sentences, at any
// step), so sequences can join and leave the running batch between steps.
//
// Functions are stateless apart from the caller's Workspace and DecoderCache; a Workspace must not
// be shared between threads.
#ifndef ROSETTA_ENGINE_TRANSFORMER_H_
#define ROSETTA_ENGINE_TRANSFORMER_H_

#include <cstdint>
#include <span>
#include <vector>

#include "engine/aligned_vector.h"
#include "engine/decoder_cache.h"
#include "engine/thread_pool.h"
#include "engine/transformer_weights.h"

namespace rosetta {

// Scratch buffers reused across calls; they grow to the largest batch seen and are never shrunk.
// Also carries the thread pool of the engine's own kernels (null: single-threaded).
class Workspace {
 public:
  // Buffers 0 to kFirstCallerBuffer - 1 belong to the forward pass; callers use the others.
  static constexpr int kFirstCallerBuffer = 16;

  float* Get(int index, size_t floats);

  ThreadPool* pool() const { return pool_; }
  void set_pool(ThreadPool* pool) { pool_ = pool; }

 private:
  std::vector<AlignedVector<float>> buffers_;
  ThreadPool* pool_ = nullptr;
};

// Runs the encoder on a packed batch. `offsets` has one entry per sentence plus a final one equal
// to the number of rows; sentence i is rows [offsets[i], offsets[i+1]). Writes [rows x d_model] to
// `output`. REQUIRES: ids valid for the source vocabulary; sentence lengths within the position
// table.
void RunEncoder(const TransformerModel& model, std::span<const int32_t> ids,
                std::span<const int> offsets, Workspace& workspace, float* output);

// Floats of cross-attention memory for a source sentence of `length` rows.
int64_t CrossMemoryFloats(const TransformerModel& model, int length);

// Computes the cross-attention keys and values of every decoder layer for packed encoder output
// rows; sentence i's memory is written to memories[i]: per layer, the keys transposed
// ([d_model x TransposedKeyStride(length_i)], engine/attention.h), then the values
// ([length_i x d_model]); CrossMemoryFloats(model, length_i) floats in all.
void ComputeCrossMemory(const TransformerModel& model, const float* encoder_output,
                        std::span<const int> offsets, std::span<float* const> memories,
                        Workspace& workspace);

// One row of a decoder step: a beam of some sentence.
struct DecoderRow {
  int token = 0;  // the input token at this step
  int step = 0;   // its position: the number of tokens before it
  // Offsets (DecoderCache::RowOffset) of this beam's history for steps 0..step; the last one is
  // where this step's keys and values are written.
  const int64_t* history = nullptr;
  // From ComputeCrossMemory. Rows that share a memory share its source_length; a sentence's
  // beams, as consecutive rows, attend it together.
  const float* cross_memory = nullptr;
  int source_length = 0;
};

// Runs one decoder step for `rows` and writes [rows x target_vocab] logits.
void RunDecoderStep(const TransformerModel& model, std::span<const DecoderRow> rows,
                    DecoderCache& cache, Workspace& workspace, float* logits);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_TRANSFORMER_H_
