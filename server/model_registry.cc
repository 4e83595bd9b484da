#include "server/model_registry.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model_loader.h"
#include "engine/transformer_weights.h"
#include "nlohmann/json.hpp"
#include "server/log.h"

namespace rosetta::server {

namespace {

// Model directories inside `dir`, sorted by name.
absl::StatusOr<std::vector<ModelSpec>> ListModelDirectory(const std::string& dir) {
  std::error_code error;
  std::vector<ModelSpec> specs;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (!entry.is_directory()) continue;
    const auto& path = entry.path();
    if (std::filesystem::exists(path / "model.bin") ||
        std::filesystem::exists(path / "config.json")) {
      specs.push_back({path.filename().string(), path.string()});
    }
  }
  if (error) return absl::NotFoundError(absl::StrCat("--models_dir ", dir, ": ", error.message()));
  if (specs.empty()) {
    return absl::NotFoundError(absl::StrCat("--models_dir ", dir, " holds no model directory"));
  }
  std::sort(specs.begin(), specs.end(),
            [](const ModelSpec& a, const ModelSpec& b) { return a.name < b.name; });
  return specs;
}

int PositionsOr(const EmbeddingWeights& embeddings, int fallback) {
  return embeddings.positions != nullptr ? std::min(fallback, embeddings.max_positions) : fallback;
}

// CTranslate2 directories and Hugging Face Marian ones are translation models; any other
// config.json goes to the embedding loader, which names unsupported types.
bool IsTranslationDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(dir) / "model.bin")) return true;
  std::ifstream in(fs::path(dir) / "config.json");
  if (!in) return true;  // LoadTranslationModel explains what is missing
  nlohmann::json config = nlohmann::json::parse(in, nullptr, false);
  return config.is_discarded() || !config.is_object() || config.value("model_type", "") == "marian";
}

// Every input carries the model's `specials` special tokens: a limit without room for one token
// beside them would refuse every text (or, cutting, exceed itself).
absl::Status CheckRoomBesideSpecials(int max_tokens, int specials, absl::string_view added_to) {
  if (max_tokens > specials) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "max_tokens_per_text ", max_tokens, " leaves no room for a token beside ", "the model's ",
      specials, specials == 1 ? " special token" : " special tokens", " added to ", added_to));
}

absl::StatusOr<std::unique_ptr<ServedModel>> LoadTranslation(const std::string& path,
                                                             const DaemonOptions& options,
                                                             ComputeType compute_type) {
  absl::StatusOr<std::unique_ptr<TranslationModel>> model =
      LoadTranslationModel(path, {.compute_type = compute_type});
  if (!model.ok()) return model.status();
  auto served = std::make_unique<ServedModel>();
  served->model = std::move(*model);
  const TransformerModel& transformer = *served->model->transformer;
  // Specials (BOS/EOS) count as tokens: the position table bounds the whole sequence.
  served->max_tokens_per_text =
      PositionsOr(transformer.encoder_embeddings, options.limits.max_tokens_per_text);
  served->max_decoding_length =
      PositionsOr(transformer.decoder_embeddings, options.batching.max_decoding_length);
  const int specials = (served->model->source_bos_id >= 0) + (served->model->source_eos_id >= 0);
  if (absl::Status s =
          CheckRoomBesideSpecials(served->max_tokens_per_text, specials, "every source (BOS/EOS)");
      !s.ok()) {
    return s;
  }
  served->embedder = TranslationEncoderEmbeddings(served->model, served->max_tokens_per_text);
  return served;
}

absl::StatusOr<std::unique_ptr<ServedModel>> LoadEmbedding(const std::string& path,
                                                           const DaemonOptions& options,
                                                           ComputeType compute_type) {
  absl::StatusOr<std::unique_ptr<EmbeddingModel>> embedder =
      LoadEmbeddingModel(path, {.compute_type = compute_type});
  if (!embedder.ok()) return embedder.status();
  auto served = std::make_unique<ServedModel>();
  served->embedder = std::move(*embedder);
  served->max_tokens_per_text =
      std::min(options.limits.max_tokens_per_text, served->embedder->max_tokens());
  // The tokenizer's own special tokens ([CLS], [SEP]): what an empty text becomes.
  bool cut = false;
  absl::StatusOr<std::vector<int32_t>> specials = served->embedder->Tokenize("", true, &cut);
  if (specials.ok()) {
    if (absl::Status s = CheckRoomBesideSpecials(served->max_tokens_per_text,
                                                 static_cast<int>(specials->size()), "every text");
        !s.ok()) {
      return s;
    }
  }
  return served;
}

BatchingOptions WorkerOptions(const ServedModel& served, const DaemonOptions& options,
                              int threads) {
  BatchingOptions batching = options.batching;
  batching.max_decoding_length = served.max_decoding_length;
  batching.num_threads = threads;
  return batching;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(
    const DaemonOptions& options, int threads,
    const std::function<WorkerObserver*(const std::string& model)>& observer_for) {
  std::vector<ModelSpec> specs = options.models;
  if (!options.models_dir.empty()) {
    absl::StatusOr<std::vector<ModelSpec>> listed = ListModelDirectory(options.models_dir);
    if (!listed.ok()) return listed.status();
    specs.insert(specs.end(), listed->begin(), listed->end());
  }
  for (const auto& [name, type] : options.model_compute_types) {
    if (std::none_of(specs.begin(), specs.end(),
                     [&](const ModelSpec& spec) { return spec.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model_compute_type: no model is named \"", name, "\""));
    }
  }
  auto registry = std::make_unique<ModelRegistry>();
  for (const ModelSpec& spec : specs) {
    if (!spec.name.empty() && registry->Find(spec.name) != nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("two models are named \"", spec.name, "\""));
    }
    const auto start = std::chrono::steady_clock::now();
    std::string path = spec.path;
    if (!std::filesystem::is_directory(path)) {
      if (std::optional<hub::HubModelId> id = hub::ParseHubModelId(path)) {
        absl::StatusOr<std::string> fetched = hub::FetchHubModel(*id, options.hub);
        if (!fetched.ok()) {
          return absl::Status(fetched.status().code(),
                              absl::StrCat("model \"", spec.name, "\" (", spec.path,
                                           "): ", fetched.status().message()));
        }
        path = *fetched;
      }
    }
    const ComputeType compute_type = ComputeTypeFor(options, spec.name);
    absl::StatusOr<std::unique_ptr<ServedModel>> loaded =
        IsTranslationDirectory(path) ? LoadTranslation(path, options, compute_type)
                                     : LoadEmbedding(path, options, compute_type);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("model \"", spec.name, "\" (", spec.path, "): ", loaded.status().message()));
    }
    std::unique_ptr<ServedModel> served = std::move(*loaded);
    served->name = spec.name;
    served->load_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const BatchingOptions batching = WorkerOptions(*served, options, threads);
    served->worker = std::make_unique<ModelWorker>(
        served->model != nullptr ? served->model->transformer : nullptr, served->embedder.get(),
        batching, observer_for ? observer_for(spec.name) : nullptr, &registry->compute_gate_);
    const EmbeddingModel& embedder = *served->embedder;
    const std::string from = path == spec.path ? path : absl::StrCat(spec.path, " (", path, ")");
    const std::string load_time = absl::StrFormat("%.2f", served->load_seconds);
    if (served->model != nullptr) {
      const TransformerModel& transformer = *served->model->transformer;
      const WorkerStats stats = served->worker->Stats();
      Log("loaded translation model \"", spec.name, "\" from ", from, " in ", load_time,
          " s: ", served->model->format, " ", transformer.config.architecture, ", ",
          transformer.config.weight_type, " weights computing in ",
          ComputeTypeName(transformer.config.compute_type), " (",
          absl::StrFormat("%.1f", WeightBytes(transformer) / 1048576.0), " MiB), d_model ",
          transformer.config.d_model, ", ", transformer.encoder_layers.size(), "+",
          transformer.decoder_layers.size(), " layers, vocabularies ",
          transformer.source_vocab_size(), "/", transformer.target_vocab_size(), "; ",
          batching.continuous ? "continuous" : "static", " batching, ", threads, " threads, up to ",
          served->worker->max_beams(), " beams of ", served->max_decoding_length,
          " tokens, KV cache ", absl::StrFormat("%.1f", stats.cache_bytes_capacity / 1048576.0),
          " MiB");
    } else {
      Log("loaded embedding model \"", spec.name, "\" from ", from, " in ", load_time,
          " s: ", embedder.architecture(), ", ", embedder.weight_type(), " weights computing in ",
          ComputeTypeName(embedder.compute_type()), " (",
          absl::StrFormat("%.1f", WeightBytes(embedder.encoder()) / 1048576.0), " MiB), dimension ",
          embedder.dimension(), ", ", embedder.encoder().encoder_layers.size(), " layers, ",
          embedder.tokenizer_description(), ", up to ", served->max_tokens_per_text,
          " tokens; pooling: ", embedder.pooling_description(),
          embedder.normalizes() ? ", normalized" : "", "; ", threads, " threads");
    }
    registry->models_.push_back(std::move(served));
  }
  if (registry->models_.empty()) return absl::InvalidArgumentError("no model to serve");
  return registry;
}

const ServedModel* ModelRegistry::Find(absl::string_view name) const {
  if (name.empty()) return models_.empty() ? nullptr : models_.front().get();
  for (const auto& model : models_) {
    if (model->name == name) return model.get();
  }
  return nullptr;
}

std::string ModelRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& model : models_) names.push_back(model->name);
  return absl::StrJoin(names, ", ");
}

void ModelRegistry::StopWorkers() {
  for (const auto& model : models_) model->worker->Stop();
}

}  // namespace rosetta::server
