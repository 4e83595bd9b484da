// Loads a translation model directory in whichever supported format it is in.
#ifndef ROSETTA_ENGINE_MODEL_LOADER_H_
#define ROSETTA_ENGINE_MODEL_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/translation_model.h"

namespace rosetta {

// Detects the format of `dir`: a CTranslate2 model (model.bin) or a Hugging Face MarianMT model
// (config.json with model_type "marian"). Errors name the file and the tensor at fault.
absl::StatusOr<std::unique_ptr<TranslationModel>> LoadTranslationModel(const std::string& dir);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_MODEL_LOADER_H_
