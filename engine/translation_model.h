// TranslationModel: a loaded encoder-decoder with its vocabularies and its text conventions, the
// unit the tools and the daemon serve. Immutable after loading and safe to share between threads.
#ifndef ROSETTA_ENGINE_TRANSLATION_MODEL_H_
#define ROSETTA_ENGINE_TRANSLATION_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/decoding.h"
#include "engine/transformer_weights.h"
#include "engine/vocabulary.h"

namespace rosetta {

// Turns text into source tokens and target tokens back into text.
class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const = 0;
  virtual std::string Detokenize(const std::vector<std::string>& tokens) const = 0;
  virtual absl::string_view name() const = 0;
};

// Tokens separated by spaces: the caller tokenizes (CTranslate2 models come without a tokenizer).
class WhitespaceCodec : public TextCodec {
 public:
  absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const override;
  std::string Detokenize(const std::vector<std::string>& tokens) const override;
  absl::string_view name() const override { return "pre-tokenized (space-separated tokens)"; }
};

struct TranslationModel {
  std::string path;
  std::string format;  // "ctranslate2" or "marian"
  std::shared_ptr<const TransformerModel> transformer;
  Vocabulary source_vocabulary;
  Vocabulary target_vocabulary;
  std::unique_ptr<TextCodec> codec;

  // Source conventions.
  int source_unk_id = -1;  // unknown tokens map here; -1: unknown tokens are an error
  int source_bos_id = -1;  // prepended when >= 0
  int source_eos_id = -1;  // appended when >= 0
  // Target ids never shown in the output tokens (start, EOS, padding, ...).
  std::vector<int> target_special_ids;

  DecodingOptions default_options;

  // Source tokens -> ids with the model's BOS/EOS. Unknown tokens map to <unk> or are an error.
  absl::StatusOr<std::vector<int32_t>> SourceIds(const std::vector<std::string>& tokens) const;
  // Text -> ids through the codec.
  absl::StatusOr<std::vector<int32_t>> EncodeText(absl::string_view text) const;
  // Target ids -> tokens, dropping special ids.
  std::vector<std::string> TargetTokens(const std::vector<int32_t>& ids) const;
  // Target ids -> text through the codec.
  std::string DecodeText(const std::vector<int32_t>& ids) const;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_TRANSLATION_MODEL_H_
