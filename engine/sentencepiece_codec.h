// SentencePieceCodec: text <-> pieces with separate source and target SentencePiece models, as
// Hugging Face's MarianTokenizer does (source.spm encodes, target.spm decodes). A leading language
// code such as ">>fra<<" (multilingual OPUS-MT models) is kept as one token.
#ifndef ROSETTA_ENGINE_SENTENCEPIECE_CODEC_H_
#define ROSETTA_ENGINE_SENTENCEPIECE_CODEC_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/spm_processor.h"
#include "engine/translation_model.h"

namespace rosetta {

class SentencePieceCodec : public TextCodec {
 public:
  static absl::StatusOr<std::unique_ptr<SentencePieceCodec>> Load(const std::string& source_model,
                                                                  const std::string& target_model);
  ~SentencePieceCodec() override;

  absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const override;
  std::string Detokenize(const std::vector<std::string>& tokens) const override;
  absl::string_view name() const override { return "SentencePiece"; }

 private:
  SentencePieceCodec() = default;
  std::unique_ptr<SpmProcessor> source_;
  std::unique_ptr<SpmProcessor> target_;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_SENTENCEPIECE_CODEC_H_
