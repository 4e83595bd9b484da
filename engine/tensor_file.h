// TensorFile: the named tensors of one weights file (CTranslate2 model.bin, safetensors, PyTorch
// pytorch_model.bin, sharded checkpoints), mapped into memory or extracted, with conversion to
// float32 and errors that name the file and the tensor.
#ifndef ROSETTA_ENGINE_TENSOR_FILE_H_
#define ROSETTA_ENGINE_TENSOR_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/aligned_vector.h"

namespace rosetta {

enum class DType { kFloat32, kFloat16, kBFloat16, kInt8, kInt16, kInt32, kInt64, kUInt8, kBool };

absl::string_view DTypeName(DType dtype);
int DTypeSize(DType dtype);

struct RawTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t num_bytes = 0;

  int64_t num_elements() const;
};

// The number of elements of `shape`, or -1 when a dimension is negative or the product overflows
// (shapes come from files and must be checked before use).
int64_t CheckedNumElements(const std::vector<int64_t>& shape);

std::string ShapeString(const std::vector<int64_t>& shape);

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

class TensorFile;

// Memory that tensors point into, kept alive by their TensorFile: mapped files, bytes extracted
// from an archive or copied to be contiguous, the files of a sharded checkpoint.
struct TensorBacking {
  std::vector<std::unique_ptr<MappedFile>> files;
  std::vector<AlignedVector<uint8_t>> buffers;
  std::vector<std::unique_ptr<TensorFile>> parts;
};

class TensorFile {
 public:
  TensorFile(std::unique_ptr<MappedFile> file, std::map<std::string, RawTensor> tensors)
      : path_(file->path()), tensors_(std::move(tensors)) {
    backing_.files.push_back(std::move(file));
  }
  // Tensors that point into `backing`; errors name `path`.
  TensorFile(std::string path, std::map<std::string, RawTensor> tensors, TensorBacking backing)
      : path_(std::move(path)), tensors_(std::move(tensors)), backing_(std::move(backing)) {}

  const std::string& path() const { return path_; }
  const std::map<std::string, RawTensor>& tensors() const { return tensors_; }
  bool Contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // Null when absent.
  const RawTensor* Find(const std::string& name) const;

  // The tensor converted to float32. float16 and bfloat16 are widened; integer tensors are an
  // error here (quantized weights go through the loader that knows their scales). When
  // `expected_shape` is not empty the tensor must have exactly that shape.
  absl::StatusOr<AlignedVector<float>> ReadFloat(const std::string& name,
                                                 const std::vector<int64_t>& expected_shape) const;

  // Renames every tensor with `rename` (used to map old naming schemes onto current ones).
  template <typename Fn>
  void RenameAll(Fn rename) {
    std::map<std::string, RawTensor> renamed;
    for (auto& [name, tensor] : tensors_) renamed[rename(name)] = tensor;
    tensors_ = std::move(renamed);
  }

  // An error naming this file and `name`: "<path>: tensor <name>: <message>".
  absl::Status TensorError(const std::string& name, absl::string_view message) const;

 private:
  std::string path_;
  std::map<std::string, RawTensor> tensors_;
  TensorBacking backing_;
};

// Widening conversions.
float HalfToFloat(uint16_t half);
float BFloat16ToFloat(uint16_t value);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_TENSOR_FILE_H_
