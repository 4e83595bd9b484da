// Reader of the safetensors format (Hugging Face): an 8-byte little-endian header length, a JSON
// header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the
// data, with offsets relative to the end of the header. The file is mapped, not copied.
#ifndef ROSETTA_ENGINE_SAFETENSORS_H_
#define ROSETTA_ENGINE_SAFETENSORS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tensor_file.h"

namespace rosetta {

// Every tensor's bounds, shape and dtype are validated against the file; errors name the file and
// the tensor.
absl::StatusOr<std::unique_ptr<TensorFile>> ReadSafetensors(const std::string& path);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_SAFETENSORS_H_
