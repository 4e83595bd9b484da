// Loads a translation model directory in whichever supported format it is in.
#ifndef ROSETTA_ENGINE_MODEL_LOADER_H_
#define ROSETTA_ENGINE_MODEL_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/packed_gemm.h"
#include "engine/translation_model.h"

namespace rosetta {

// How a model is prepared when it is loaded.
struct LoadOptions {
  // How its linear layers multiply: float32; bfloat16 (inputs and weights rounded to bfloat16,
  // float32 sums; CPUs with AVX512_BF16); int8 (weights quantized per column, inputs per row,
  // int32 sums; CPUs with AVX512_VNNI). See ComputeType.
  ComputeType compute_type = ComputeType::kFloat32;
};

// OK when this CPU can load models with `options`; otherwise an error saying why.
absl::Status CheckLoadOptions(const LoadOptions& options);

// Detects the format of `dir`: a CTranslate2 model (model.bin) or a Hugging Face MarianMT model
// (config.json with model_type "marian"). Errors name the file and the tensor at fault.
absl::StatusOr<std::unique_ptr<TranslationModel>> LoadTranslationModel(
    const std::string& dir, const LoadOptions& options = {});

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_MODEL_LOADER_H_
