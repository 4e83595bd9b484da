#include "client/output_format.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace rosetta::client {
namespace {

using ordered_json = nlohmann::ordered_json;

// JSON numbers are doubles: a float widened as is prints with 17 digits of noise
// (0.1f -> 0.10000000149011612). Widen the float's shortest decimal form instead.
double ShortestDouble(float value) {
  char buffer[32];
  const auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer) - 1, value);
  if (error != std::errc()) return value;
  *end = '\0';
  return std::strtod(buffer, nullptr);
}

}  // namespace

std::string FormatTranslation(const rosetta::v1::Translation& translation,
                              const TranslationFormat& format) {
  if (format.json) {
    ordered_json hypotheses = ordered_json::array();
    for (const rosetta::v1::Hypothesis& hypothesis : translation.hypotheses()) {
      hypotheses.push_back({{"text", hypothesis.text()},
                            {"tokens", std::vector<std::string>(hypothesis.tokens().begin(),
                                                                hypothesis.tokens().end())},
                            {"score", ShortestDouble(hypothesis.score())}});
    }
    ordered_json line = {{"hypotheses", std::move(hypotheses)},
                         {"input_tokens", translation.input_tokens()},
                         {"output_tokens", translation.output_tokens()}};
    return line.dump();
  }
  std::string line;
  for (int h = 0; h < translation.hypotheses_size(); ++h) {
    if (h > 0) line += '\t';
    const rosetta::v1::Hypothesis& hypothesis = translation.hypotheses(h);
    if (format.scores) absl::StrAppendFormat(&line, "%.6f ||| ", hypothesis.score());
    line += hypothesis.text();
  }
  return line;
}

std::string FormatEmbedding(const rosetta::v1::Embedding& embedding, bool json) {
  if (json) {
    std::vector<double> values;
    values.reserve(embedding.values_size());
    for (float value : embedding.values()) values.push_back(ShortestDouble(value));
    ordered_json line = {{"values", std::move(values)},
                         {"tokens", embedding.tokens()},
                         {"truncated", embedding.truncated()}};
    return line.dump();
  }
  return absl::StrJoin(embedding.values(), " ", [](std::string* out, float value) {
    absl::StrAppendFormat(out, "%.6g", value);
  });
}

std::string ModelKindName(rosetta::v1::ModelKind kind) {
  switch (kind) {
    case rosetta::v1::MODEL_KIND_TRANSLATION:
      return "translation";
    case rosetta::v1::MODEL_KIND_EMBEDDING:
      return "embedding";
    default:
      return "unspecified";
  }
}

std::string FormatModelTable(const rosetta::v1::ListModelsResponse& models) {
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "KIND", "ARCHITECTURE", "QUANTIZATION", "COMPUTE", "DEFAULT"}};
  for (const rosetta::v1::ModelInfo& model : models.models()) {
    rows.push_back({model.name(), ModelKindName(model.kind()), model.architecture(),
                    model.quantization(), model.compute_type(), model.is_default() ? "*" : ""});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string table;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - row[c].size(), ' ');
    }
    // The last column may be empty: no trailing spaces.
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&table, line, "\n");
  }
  return table;
}

}  // namespace rosetta::client
