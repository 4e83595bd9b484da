#include "engine/translation_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace rosetta {

absl::StatusOr<std::vector<std::string>> WhitespaceCodec::Tokenize(absl::string_view text) const {
  std::vector<std::string> tokens =
      absl::StrSplit(text, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  return tokens;
}

std::string WhitespaceCodec::Detokenize(const std::vector<std::string>& tokens) const {
  return absl::StrJoin(tokens, " ");
}

absl::StatusOr<std::vector<int32_t>> TranslationModel::SourceIds(
    const std::vector<std::string>& tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(tokens.size() + 2);
  if (source_bos_id >= 0) ids.push_back(source_bos_id);
  for (const std::string& token : tokens) {
    std::optional<int> id = source_vocabulary.Find(token);
    if (id.has_value()) {
      ids.push_back(*id);
    } else if (source_unk_id >= 0) {
      ids.push_back(source_unk_id);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown source token \"", token,
                                                     "\" (the model's vocabulary has no <unk>)"));
    }
  }
  if (source_eos_id >= 0) ids.push_back(source_eos_id);
  return ids;
}

absl::StatusOr<std::vector<int32_t>> TranslationModel::EncodeText(absl::string_view text) const {
  absl::StatusOr<std::vector<std::string>> tokens = codec->Tokenize(text);
  if (!tokens.ok()) return tokens.status();
  return SourceIds(*tokens);
}

std::vector<std::string> TranslationModel::TargetTokens(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (std::find(target_special_ids.begin(), target_special_ids.end(), id) !=
        target_special_ids.end()) {
      continue;
    }
    tokens.push_back(target_vocabulary.Token(id));
  }
  return tokens;
}

std::string TranslationModel::DecodeText(const std::vector<int32_t>& ids) const {
  return codec->Detokenize(TargetTokens(ids));
}

}  // namespace rosetta
