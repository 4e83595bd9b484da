#include "engine/hf_weights.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/file_util.h"
#include "engine/pytorch_checkpoint.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

absl::StatusOr<std::unique_ptr<TensorFile>> ReadWeightsFile(const std::string& path) {
  if (absl::EndsWith(path, ".safetensors")) return ReadSafetensors(path);
  return ReadPytorchCheckpoint(path);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorFile>> ReadShardedCheckpoint(const std::string& index_path) {
  ASSIGN_OR_RETURN(nlohmann::json index, ReadJsonFile(index_path));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": no \"weight_map\" object of tensor names to shard files"));
  }
  const size_t slash = index_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : index_path.substr(0, slash + 1);
  const std::string index_name = index_path.substr(dir.size());
  const bool pytorch = absl::StartsWith(index_name, "pytorch_model");

  std::map<std::string, std::vector<std::string>> names_by_shard;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map[\"", name, "\"] is not a file name"));
    }
    const std::string file = shard.get<std::string>();
    // The index is data: it must not reach outside its directory.
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": weight_map[\"", name, "\"] = \"", file, "\" is not a plain file name"));
    }
    names_by_shard[file].push_back(name);
  }
  if (names_by_shard.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": the weight_map is empty"));
  }

  TensorBacking backing;
  std::map<std::string, RawTensor> tensors;
  for (const auto& [file, names] : names_by_shard) {
    const std::string shard_path = dir + file;
    ASSIGN_OR_RETURN(std::unique_ptr<TensorFile> shard,
                     pytorch ? ReadPytorchCheckpoint(shard_path) : ReadSafetensors(shard_path));
    for (const std::string& name : names) {
      const RawTensor* tensor = shard->Find(name);
      if (tensor == nullptr) {
        return absl::DataLossError(absl::StrCat(shard_path, ": tensor ", name, " is missing (",
                                                index_name, " places it there)"));
      }
      tensors[name] = *tensor;
    }
    backing.parts.push_back(std::move(shard));
  }
  return std::make_unique<TensorFile>(index_path, std::move(tensors), std::move(backing));
}

absl::StatusOr<std::unique_ptr<TensorFile>> ReadHuggingFaceWeights(const std::string& dir) {
  static constexpr const char* kCandidates[] = {"model.safetensors", "model.safetensors.index.json",
                                                "pytorch_model.bin",
                                                "pytorch_model.bin.index.json"};
  for (const char* name : kCandidates) {
    const std::string path = JoinPath(dir, name);
    if (!FileExists(path)) continue;
    if (absl::EndsWith(path, ".index.json")) return ReadShardedCheckpoint(path);
    return ReadWeightsFile(path);
  }
  return absl::NotFoundError(
      absl::StrCat(dir,
                   ": no weights: looked for model.safetensors, model.safetensors.index.json, "
                   "pytorch_model.bin and pytorch_model.bin.index.json"));
}

}  // namespace rosetta
