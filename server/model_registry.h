// The models a daemon serves: each loaded model with its engine worker, found by name.
// Immutable after Load() apart from the workers' own state; thread-safe to read.
#ifndef ROSETTA_SERVER_MODEL_REGISTRY_H_
#define ROSETTA_SERVER_MODEL_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/embedding_model.h"
#include "engine/translation_model.h"
#include "server/daemon_options.h"
#include "server/model_worker.h"

namespace rosetta::server {

struct ServedModel {
  std::string name;
  std::shared_ptr<const TranslationModel> model;  // null for an embedding-only model
  std::unique_ptr<EmbeddingModel> embedder;       // Encode: always set
  std::unique_ptr<ModelWorker> worker;
  double load_seconds = 0.0;
  int max_tokens_per_text = 0;  // the request limit capped by the model's positions
  int max_decoding_length = 0;  // the daemon's cap capped by the model's positions
  bool translates() const { return model != nullptr; }
};

class ModelRegistry {
 public:
  // Loads every model of `options` (--model, then --models_dir in name order) and starts its
  // worker with `threads` engine threads. Fails on the first model that does not load, naming it.
  // `observer_for`, when set, gives each model's worker its observer (metrics).
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Load(
      const DaemonOptions& options, int threads,
      const std::function<WorkerObserver*(const std::string& model)>& observer_for = nullptr);

  // The model called `name`; the default model for an empty name; null if none.
  const ServedModel* Find(absl::string_view name) const;
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }
  std::string Names() const;  // "a, b, c", for error messages

  // Stops every worker: their remaining jobs end with UNAVAILABLE.
  void StopWorkers();

 private:
  // Before models_: the workers use it until they stop.
  ComputeGate compute_gate_;
  std::vector<std::unique_ptr<ServedModel>> models_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_MODEL_REGISTRY_H_
