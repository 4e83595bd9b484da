// Vocabulary: the bijection between token strings and ids of one side of a model.
#ifndef ROSETTA_ENGINE_VOCABULARY_H_
#define ROSETTA_ENGINE_VOCABULARY_H_

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta {

class Vocabulary {
 public:
  Vocabulary() = default;
  // REQUIRES: tokens are unique (duplicates keep their first id).
  explicit Vocabulary(std::vector<std::string> tokens);

  // One token per line (CTranslate2's .txt vocabularies, BERT's vocab.txt).
  static absl::StatusOr<Vocabulary> FromTextFile(const std::string& path);
  // A JSON array of tokens (CTranslate2 version 6 vocabularies).
  static absl::StatusOr<Vocabulary> FromJsonList(const std::string& path);
  // A JSON object token -> id (Hugging Face vocab.json). Ids must be 0..n-1 without gaps.
  static absl::StatusOr<Vocabulary> FromJsonMap(const std::string& path);

  // Adds a token with the next id. REQUIRES: the token is not in the vocabulary.
  void Append(std::string token);

  int size() const { return static_cast<int>(tokens_.size()); }
  std::optional<int> Find(absl::string_view token) const;
  const std::string& Token(int id) const { return tokens_[id]; }

 private:
  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int> ids_;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_VOCABULARY_H_
