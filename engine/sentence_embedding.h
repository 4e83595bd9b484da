// Sentence embeddings from a translation model's encoder: the mean of the encoder's final states
// over the sentence's tokens (special tokens included), optionally scaled to unit L2 norm.
#ifndef ROSETTA_ENGINE_SENTENCE_EMBEDDING_H_
#define ROSETTA_ENGINE_SENTENCE_EMBEDDING_H_

#include <cstdint>
#include <span>

#include "engine/transformer.h"
#include "engine/transformer_weights.h"

namespace rosetta {

// Encodes a packed batch (as RunEncoder: sentence i is ids [offsets[i], offsets[i+1])) and writes
// one d_model vector per sentence to `embeddings` ([sentences x d_model]). Uses the workspace's
// buffer kFirstCallerBuffer + 1 and its thread pool.
// REQUIRES: every sentence non-empty, ids valid for the source vocabulary, lengths within the
// model's positions.
void MeanPooledEncoderEmbeddings(const TransformerModel& model, std::span<const int32_t> ids,
                                 std::span<const int> offsets, bool normalize, Workspace& workspace,
                                 float* embeddings);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_SENTENCE_EMBEDDING_H_
