// Reader of PyTorch checkpoints written by torch.save (pytorch_model.bin): the zip archive of
// PyTorch >= 1.6 holding <stem>/data.pkl, a pickle of the state dict, and <stem>/data/<key>, the
// raw bytes of each storage. The pickle is read with the restricted unpickler of engine/pickle.h:
// only the globals of a state dict are accepted (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, the torch.*Storage types), so
// a checkpoint that would run code (os.system, builtins.eval, ...) is refused, never executed.
//
// Tensors that share a storage (tied weights) point into one copy of it; views with a storage
// offset are supported; non-contiguous views are copied to contiguous row-major order. Storages
// are extracted from the archive (stored or deflated entries, CRC checked) into buffers the
// returned TensorFile owns. float32, float16 and bfloat16 tensors convert with ReadFloat; integer
// and bool tensors are kept with their dtype; float64 and complex tensors are an error naming the
// tensor. The legacy format of torch.save before 1.6 is not read.
#ifndef ROSETTA_ENGINE_PYTORCH_CHECKPOINT_H_
#define ROSETTA_ENGINE_PYTORCH_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor_file.h"

namespace rosetta {

// What data.pkl says about one tensor of a state dict.
struct PytorchTensorRecord {
  std::string name;
  DType dtype = DType::kFloat32;
  std::string storage_key;       // the storage is the archive entry <stem>/data/<storage_key>
  int64_t storage_elements = 0;  // the storage's length, in elements of `dtype`
  int64_t storage_offset = 0;    // in elements
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements
};

// Parses the pickle of a state dict: a dict (or OrderedDict) of names to tensors. Errors start
// with `where`; a refused global or opcode is PermissionDenied, malformed data DataLoss.
absl::StatusOr<std::vector<PytorchTensorRecord>> ParseStateDictPickle(absl::string_view pickle,
                                                                      absl::string_view where);

// Reads a checkpoint written by torch.save(state_dict); errors name the file and the tensor.
absl::StatusOr<std::unique_ptr<TensorFile>> ReadPytorchCheckpoint(const std::string& path);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_PYTORCH_CHECKPOINT_H_
