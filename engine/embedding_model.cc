#include "engine/embedding_model.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/bert_loader.h"
#include "engine/file_util.h"
#include "engine/model_loader.h"
#include "engine/sentence_embedding.h"
#include "engine/status_macros.h"
#include "engine/translation_model.h"

namespace rosetta {

namespace {

absl::Status TooLong(size_t ids, int max_tokens) {
  return absl::InvalidArgumentError(absl::StrCat("the text has ", ids, " tokens; the limit is ",
                                                 max_tokens, " (the model's maximum)"));
}

// Packs inputs back to back (no padding) as RunEncoder takes them.
void Pack(std::span<const std::vector<int32_t>> inputs, std::vector<int32_t>& ids,
          std::vector<int>& offsets) {
  offsets.assign(1, 0);
  for (const std::vector<int32_t>& input : inputs) {
    ids.insert(ids.end(), input.begin(), input.end());
    offsets.push_back(static_cast<int>(ids.size()));
  }
}

class BertEmbeddingModel : public EmbeddingModel {
 public:
  BertEmbeddingModel(const std::string& dir, BertDirectory bert)
      : tokenizer_(std::move(bert.tokenizer)) {
    encoder_ = std::move(bert.encoder);
    max_tokens_ = bert.max_tokens;
    pooling_ = bert.pooling;
    normalize_ = bert.normalize;
    pooling_description_ = std::move(bert.pooling_description);
    tokenizer_description_ =
        tokenizer_->options().lower_case ? "WordPiece (uncased)" : "WordPiece (cased)";
    path_ = dir;
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(absl::string_view text, bool truncate,
                                                bool* truncated) const override {
    ASSIGN_OR_RETURN(std::vector<int32_t> pieces, tokenizer_->Encode(text));
    const size_t room = static_cast<size_t>(max_tokens_) - 2;  // [CLS] and [SEP]
    if (truncated != nullptr) *truncated = false;
    if (pieces.size() > room) {
      if (!truncate) return TooLong(pieces.size() + 2, max_tokens_);
      pieces.resize(room);
      if (truncated != nullptr) *truncated = true;
    }
    std::vector<int32_t> ids;
    ids.reserve(pieces.size() + 2);
    ids.push_back(tokenizer_->cls_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    ids.push_back(tokenizer_->sep_id());
    return ids;
  }

  void Embed(std::span<const std::vector<int32_t>> inputs, Workspace& workspace,
             float* out) const override {
    std::vector<int32_t> ids;
    std::vector<int> offsets;
    Pack(inputs, ids, offsets);
    const int d = dimension();
    float* states = workspace.Get(Workspace::kFirstCallerBuffer + 1, ids.size() * d);
    RunEncoder(*encoder_, ids, offsets, workspace, states);
    PoolStates(states, offsets, d, pooling_, normalize_, out);
  }

 private:
  std::unique_ptr<WordPieceTokenizer> tokenizer_;
};

class TranslationEncoderModel : public EmbeddingModel {
 public:
  TranslationEncoderModel(std::shared_ptr<const TranslationModel> model, int max_tokens)
      : model_(std::move(model)) {
    encoder_ = model_->transformer;
    max_tokens_ = max_tokens;
    pooling_ = Pooling::kMean;
    pooling_description_ = "mean of the encoder's final states (special tokens included)";
    tokenizer_description_ = std::string(model_->codec->name());
    path_ = model_->path;
  }

  absl::StatusOr<std::vector<int32_t>> Tokenize(absl::string_view text, bool truncate,
                                                bool* truncated) const override {
    ASSIGN_OR_RETURN(std::vector<std::string> tokens, model_->codec->Tokenize(text));
    if (tokens.empty()) return absl::InvalidArgumentError("the text is empty (no tokens)");
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, model_->SourceIds(tokens));
    if (truncated != nullptr) *truncated = false;
    if (static_cast<int>(ids.size()) > max_tokens_) {
      if (!truncate) return TooLong(ids.size(), max_tokens_);
      // Keep the model's specials: cut the tokens, then add BOS/EOS again.
      const int specials = static_cast<int>(ids.size() - tokens.size());
      tokens.resize(std::max(1, max_tokens_ - specials));
      ASSIGN_OR_RETURN(ids, model_->SourceIds(tokens));
      if (truncated != nullptr) *truncated = true;
    }
    return ids;
  }

  void Embed(std::span<const std::vector<int32_t>> inputs, Workspace& workspace,
             float* out) const override {
    std::vector<int32_t> ids;
    std::vector<int> offsets;
    Pack(inputs, ids, offsets);
    MeanPooledEncoderEmbeddings(*encoder_, ids, offsets, /*normalize=*/false, workspace, out);
  }

 private:
  std::shared_ptr<const TranslationModel> model_;
};

}  // namespace

void PoolStates(const float* states, std::span<const int> offsets, int dim, Pooling pooling,
                bool normalize, float* out) {
  const int sentences = static_cast<int>(offsets.size()) - 1;
  std::vector<double> pooled(dim);
  for (int s = 0; s < sentences; ++s) {
    const int begin = offsets[s];
    const int end = offsets[s + 1];
    const float* first = states + static_cast<int64_t>(begin) * dim;
    switch (pooling) {
      case Pooling::kCls:
        std::copy(first, first + dim, pooled.begin());
        break;
      case Pooling::kMean:
        std::fill(pooled.begin(), pooled.end(), 0.0);
        for (int r = begin; r < end; ++r) {
          const float* row = states + static_cast<int64_t>(r) * dim;
          for (int j = 0; j < dim; ++j) pooled[j] += row[j];
        }
        for (int j = 0; j < dim; ++j) pooled[j] /= end - begin;
        break;
      case Pooling::kMax:
        std::fill(pooled.begin(), pooled.end(), -std::numeric_limits<double>::infinity());
        for (int r = begin; r < end; ++r) {
          const float* row = states + static_cast<int64_t>(r) * dim;
          for (int j = 0; j < dim; ++j) pooled[j] = std::max<double>(pooled[j], row[j]);
        }
        break;
    }
    double norm = 0.0;
    for (int j = 0; j < dim; ++j) norm += pooled[j] * pooled[j];
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    const double scale = normalize ? 1.0 / std::max(std::sqrt(norm), 1e-12) : 1.0;
    float* o = out + static_cast<int64_t>(s) * dim;
    for (int j = 0; j < dim; ++j) o[j] = static_cast<float>(pooled[j] * scale);
  }
}

std::unique_ptr<EmbeddingModel> TranslationEncoderEmbeddings(
    std::shared_ptr<const TranslationModel> model, int max_tokens) {
  return std::make_unique<TranslationEncoderModel>(std::move(model), max_tokens);
}

absl::StatusOr<std::unique_ptr<EmbeddingModel>> LoadEmbeddingModel(const std::string& dir,
                                                                   const LoadOptions& options) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a model directory"));
  }
  const std::string config_path = JoinPath(dir, "config.json");
  std::string model_type;
  if (FileExists(config_path)) {
    ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonFile(config_path));
    if (config.is_object() && config.contains("model_type") && config["model_type"].is_string()) {
      model_type = config["model_type"].get<std::string>();
    }
  }
  if (model_type == "bert") {
    ASSIGN_OR_RETURN(BertDirectory bert, LoadBertDirectory(dir, options.compute_type));
    return std::make_unique<BertEmbeddingModel>(dir, std::move(bert));
  }
  if (model_type == "roberta" || model_type == "xlm-roberta") {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": model_type \"", model_type,
        "\" is not supported: its BPE or SentencePiece tokenizer with fairseq id offsets is not "
        "implemented (supported: \"bert\" encoders; \"marian\" and CTranslate2 translation "
        "models' encoders)"));
  }
  if (!model_type.empty() && model_type != "marian") {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": model_type \"", model_type,
        "\" is not supported (supported: \"bert\" encoders; \"marian\" and CTranslate2 "
        "translation models' encoders)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<TranslationModel> translation,
                   LoadTranslationModel(dir, options));
  // Models with sinusoidal positions computed at load time have a table of some length too.
  const int positions = translation->transformer->encoder_embeddings.max_positions;
  const int max_tokens = positions > 0 ? positions : 1024;
  return TranslationEncoderEmbeddings(std::move(translation), max_tokens);
}

}  // namespace rosetta
