// EmbeddingModel: text -> fixed-size vectors (sentence embeddings), the unit the daemon's Encode
// API serves. Two kinds sit behind it:
//  - BERT-family encoders in Hugging Face layout (bert_loader.h), with the sentence-transformers
//    pooling (CLS, mean or max) and Normalize modules when the directory has them;
//  - the encoder of a translation model (CTranslate2, Marian): the mean of its final states over
//    the sentence's tokens, special tokens included (sentence_embedding.h).
//
// Thread safety: the model is immutable after loading; Tokenize may be called from any thread.
// Embed is thread-compatible: concurrent calls need distinct Workspaces (the daemon's per-model
// worker owns one, with its thread pool, and calls Embed between its other work).
#ifndef ROSETTA_ENGINE_EMBEDDING_MODEL_H_
#define ROSETTA_ENGINE_EMBEDDING_MODEL_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model_loader.h"
#include "engine/transformer.h"
#include "engine/transformer_weights.h"

namespace rosetta {

struct TranslationModel;

enum class Pooling {
  kCls,   // the final state of the first token ([CLS])
  kMean,  // the mean of the final states of the text's tokens (specials included, no padding)
  kMax,   // the element-wise maximum over the same tokens
};

class EmbeddingModel {
 public:
  virtual ~EmbeddingModel() = default;

  // Text -> input ids with the model's special tokens ([CLS] ... [SEP] for BERT; the translation
  // model's BOS/EOS otherwise). A text longer than max_tokens() is an error naming both lengths,
  // unless `truncate`: then its tokens are cut so the ids, specials included, fit, and *truncated
  // (when not null) is set to whether anything was cut. Errors: invalid UTF-8, too long, and for
  // translation models a text with no tokens.
  virtual absl::StatusOr<std::vector<int32_t>> Tokenize(absl::string_view text, bool truncate,
                                                        bool* truncated) const = 0;

  // Embeds a batch in one pass and writes inputs.size() x dimension() floats to `out`: pooling,
  // then unit L2 norm when normalizes(). Uses the workspace's thread pool and its buffers
  // Workspace::kFirstCallerBuffer + 1 and + 2. REQUIRES: every input comes from Tokenize
  // (non-empty, ids within the vocabulary, at most max_tokens() ids).
  virtual void Embed(std::span<const std::vector<int32_t>> inputs, Workspace& workspace,
                     float* out) const = 0;

  int dimension() const { return encoder_->config.d_model; }
  // The most ids (specials included) an input may have.
  int max_tokens() const { return max_tokens_; }
  Pooling pooling() const { return pooling_; }
  // Whether Embed scales every vector to unit length (the model's own Normalize module).
  bool normalizes() const { return normalize_; }
  // For model info, e.g. "mean of the final states over the text's tokens (sentence-transformers
  // 1_Pooling)".
  const std::string& pooling_description() const { return pooling_description_; }
  const std::string& architecture() const { return encoder_->config.architecture; }
  int vocabulary_size() const { return encoder_->source_vocab_size(); }
  const std::string& weight_type() const { return encoder_->config.weight_type; }
  ComputeType compute_type() const { return encoder_->config.compute_type; }
  // "WordPiece (uncased)", "SentencePiece", ...
  const std::string& tokenizer_description() const { return tokenizer_description_; }
  const std::string& path() const { return path_; }
  // The encoder whose final states are pooled (for tests and tools).
  const TransformerModel& encoder() const { return *encoder_; }

 protected:
  std::shared_ptr<const TransformerModel> encoder_;
  int max_tokens_ = 0;
  Pooling pooling_ = Pooling::kMean;
  bool normalize_ = false;
  std::string pooling_description_;
  std::string tokenizer_description_;
  std::string path_;
};

// Loads `dir`: a Hugging Face BERT-family encoder (config.json model_type "bert"), or any
// translation model LoadTranslationModel reads (its encoder, mean pooling, no normalisation).
// Errors name the file and, for weights, the tensor; an unsupported model_type is named with the
// list of supported ones.
absl::StatusOr<std::unique_ptr<EmbeddingModel>> LoadEmbeddingModel(const std::string& dir,
                                                                   const LoadOptions& options = {});

// The encoder of an already loaded translation model behind the same interface (the daemon loads
// a translation model once and serves both Translate and Encode from it).
std::unique_ptr<EmbeddingModel> TranslationEncoderEmbeddings(
    std::shared_ptr<const TranslationModel> model, int max_tokens);

// Pools packed encoder states: sentence i is rows [offsets[i], offsets[i+1]) of `states`
// ([rows x dim]); writes [sentences x dim] to `out`, then scales each row to unit L2 norm when
// `normalize` (a zero vector stays zero). Sums and norms are accumulated in double, so a vector
// does not depend on the other sentences of its batch. REQUIRES: every sentence non-empty.
void PoolStates(const float* states, std::span<const int> offsets, int dim, Pooling pooling,
                bool normalize, float* out);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_EMBEDDING_MODEL_H_
