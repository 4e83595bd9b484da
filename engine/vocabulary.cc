#include "engine/vocabulary.h"

#include "absl/strings/str_cat.h"
#include "engine/file_util.h"

namespace rosetta {

Vocabulary::Vocabulary(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
  ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(tokens_[i], static_cast<int>(i));
}

void Vocabulary::Append(std::string token) {
  ids_.emplace(token, static_cast<int>(tokens_.size()));
  tokens_.push_back(std::move(token));
}

std::optional<int> Vocabulary::Find(absl::string_view token) const {
  auto it = ids_.find(std::string(token));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<Vocabulary> Vocabulary::FromTextFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  std::vector<std::string> tokens;
  size_t begin = 0;
  while (begin < text->size()) {
    size_t end = text->find('\n', begin);
    if (end == std::string::npos) end = text->size();
    std::string line = text->substr(begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    tokens.push_back(std::move(line));
    begin = end + 1;
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty vocabulary"));
  return Vocabulary(std::move(tokens));
}

absl::StatusOr<Vocabulary> Vocabulary::FromJsonList(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = ReadJsonFile(path);
  if (!json.ok()) return json.status();
  if (!json->is_array() || json->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected a non-empty JSON array of tokens"));
  }
  std::vector<std::string> tokens;
  for (const auto& item : *json) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token #", tokens.size(), " is not a string"));
    }
    tokens.push_back(item.get<std::string>());
  }
  return Vocabulary(std::move(tokens));
}

absl::StatusOr<Vocabulary> Vocabulary::FromJsonMap(const std::string& path) {
  absl::StatusOr<nlohmann::json> json = ReadJsonFile(path);
  if (!json.ok()) return json.status();
  if (!json->is_object() || json->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object token -> id"));
  }
  std::vector<std::string> tokens(json->size());
  std::vector<bool> seen(json->size(), false);
  for (const auto& [token, id] : json->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= static_cast<int64_t>(tokens.size()) || seen[id.get<int64_t>()]) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": token \"", token, "\" has an invalid or duplicate id (ids must be 0..",
          tokens.size() - 1, ", each once)"));
    }
    tokens[id.get<int64_t>()] = token;
    seen[id.get<int64_t>()] = true;
  }
  return Vocabulary(std::move(tokens));
}

}  // namespace rosetta
