// The weights of a Hugging Face model directory, in whichever of its formats it holds.
#ifndef ROSETTA_ENGINE_HF_WEIGHTS_H_
#define ROSETTA_ENGINE_HF_WEIGHTS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tensor_file.h"

namespace rosetta {

// Reads the first present of model.safetensors, model.safetensors.index.json,
// pytorch_model.bin and pytorch_model.bin.index.json in `dir`; NotFound names them all when none
// is.
absl::StatusOr<std::unique_ptr<TensorFile>> ReadHuggingFaceWeights(const std::string& dir);

// Reads a sharded checkpoint: a JSON index {"weight_map": {tensor: shard file}} beside its shards
// (safetensors, or pytorch_model.bin files when the index's name starts with pytorch_model).
// Shard names must be plain file names in the index's directory; every tensor of the weight map
// must be in its shard. Shape errors found later name the index.
absl::StatusOr<std::unique_ptr<TensorFile>> ReadShardedCheckpoint(const std::string& index_path);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_HF_WEIGHTS_H_
