// Loads Hugging Face MarianMT (OPUS-MT) model directories: config.json, the weights
// (model.safetensors, else pytorch_model.bin, or their sharded *.index.json forms; see
// engine/hf_weights.h), vocab.json, source.spm, target.spm, and generation_config.json when
// present. Tensor names and config keys are those of transformers' modeling_marian.py; tied
// weights that safetensors stores once (model.shared.weight) are found under any of their names.
#ifndef ROSETTA_ENGINE_MARIAN_LOADER_H_
#define ROSETTA_ENGINE_MARIAN_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/translation_model.h"

namespace rosetta {

bool LooksLikeMarianDirectory(const std::string& dir);

absl::StatusOr<std::unique_ptr<TranslationModel>> LoadMarianModel(
    const std::string& dir, ComputeType compute_type = ComputeType::kFloat32);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_MARIAN_LOADER_H_
