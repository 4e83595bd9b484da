#include "engine/sentencepiece_codec.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace rosetta {

namespace {

absl::StatusOr<std::unique_ptr<SpmProcessor>> LoadProcessor(const std::string& path) {
  std::string error;
  std::unique_ptr<SpmProcessor> processor = SpmProcessor::Load(path, &error);
  if (processor == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot load the SentencePiece model: ", error));
  }
  return processor;
}

// Length of a ">>xx<<" language code at the start of `text`, or 0.
size_t LanguageCodeLength(absl::string_view text) {
  if (text.size() < 5 || text.substr(0, 2) != ">>") return 0;
  const size_t end = text.find("<<", 2);
  if (end == absl::string_view::npos || end == 2 || end > 16) return 0;
  for (size_t i = 2; i < end; ++i) {
    const char c = text[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return 0;
  }
  return end + 2;
}

}  // namespace

SentencePieceCodec::~SentencePieceCodec() = default;

absl::StatusOr<std::unique_ptr<SentencePieceCodec>> SentencePieceCodec::Load(
    const std::string& source_model, const std::string& target_model) {
  std::unique_ptr<SentencePieceCodec> codec(new SentencePieceCodec());
  auto source = LoadProcessor(source_model);
  if (!source.ok()) return source.status();
  auto target = LoadProcessor(target_model);
  if (!target.ok()) return target.status();
  codec->source_ = std::move(*source);
  codec->target_ = std::move(*target);
  return codec;
}

absl::StatusOr<std::vector<std::string>> SentencePieceCodec::Tokenize(
    absl::string_view text) const {
  std::vector<std::string> tokens;
  if (const size_t code = LanguageCodeLength(text); code > 0) {
    tokens.emplace_back(text.substr(0, code));
    text.remove_prefix(code);
  }
  std::vector<std::string> pieces;
  std::string error;
  if (!source_->Encode(std::string(text), &pieces, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("SentencePiece encoding failed: ", error));
  }
  tokens.insert(tokens.end(), pieces.begin(), pieces.end());
  return tokens;
}

std::string SentencePieceCodec::Detokenize(const std::vector<std::string>& tokens) const {
  // As MarianTokenizer.convert_tokens_to_string: decode with the target model, then turn the
  // word-boundary marks left by pieces it does not know into spaces, and trim.
  std::string text;
  std::string error;
  if (!target_->Decode(tokens, &text, &error)) return "";
  text = absl::StrReplaceAll(text, {{"\xe2\x96\x81", " "}});
  return std::string(absl::StripAsciiWhitespace(text));
}

}  // namespace rosetta
