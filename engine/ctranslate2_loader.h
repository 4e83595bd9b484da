// Loads CTranslate2 Transformer encoder-decoder model directories: `model.bin` (binary versions 1
// to 6; float32, float16, bfloat16, int8 and int16 weights, dequantized to float32 on load), the
// vocabularies (`source_vocabulary.txt`/`target_vocabulary.txt`, `shared_vocabulary.txt`, or their
// `.json` forms) and, from version 6, `config.json`.
#ifndef ROSETTA_ENGINE_CTRANSLATE2_LOADER_H_
#define ROSETTA_ENGINE_CTRANSLATE2_LOADER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/translation_model.h"

namespace rosetta {

bool LooksLikeCt2Directory(const std::string& dir);

absl::StatusOr<std::unique_ptr<TranslationModel>> LoadCt2Model(
    const std::string& dir, ComputeType compute_type = ComputeType::kFloat32);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_CTRANSLATE2_LOADER_H_
