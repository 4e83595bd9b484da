#include "engine/ctranslate2_file.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const MappedFile& file) : file_(file) {}

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    if (file_.size() - offset_ < sizeof(T)) return Truncated(what);
    T value;
    std::memcpy(&value, file_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(absl::string_view what) {
    absl::StatusOr<uint16_t> length = Read<uint16_t>(what);
    if (!length.ok()) return length.status();
    if (*length == 0) return Corrupt(absl::StrCat(what, " has length 0"));
    if (file_.size() - offset_ < *length) return Truncated(what);
    const char* begin = reinterpret_cast<const char*>(file_.data() + offset_);
    offset_ += *length;
    if (begin[*length - 1] != '\0') return Corrupt(absl::StrCat(what, " is not NUL-terminated"));
    return std::string(begin, *length - 1);
  }

  absl::StatusOr<const uint8_t*> Take(size_t bytes, absl::string_view what) {
    if (file_.size() - offset_ < bytes) return Truncated(what);
    const uint8_t* p = file_.data() + offset_;
    offset_ += bytes;
    return p;
  }

  bool at_end() const { return offset_ == file_.size(); }

  absl::Status Truncated(absl::string_view what) const {
    return absl::DataLossError(
        absl::StrCat(file_.path(), ": truncated while reading ", what, " at byte ", offset_));
  }
  absl::Status Corrupt(absl::string_view message) const {
    return absl::DataLossError(absl::StrCat(file_.path(), ": ", message, " (byte ", offset_, ")"));
  }

 private:
  const MappedFile& file_;
  size_t offset_ = 0;
};

// CTranslate2's DataType enumeration (src/types.h), used from binary version 4.
absl::StatusOr<DType> DTypeFromCt2Id(int id) {
  switch (id) {
    case 0:
      return DType::kFloat32;
    case 1:
      return DType::kInt8;
    case 2:
      return DType::kInt16;
    case 3:
      return DType::kInt32;
    case 4:
      return DType::kFloat16;
    case 5:
      return DType::kBFloat16;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported data type id ", id));
}

// Before version 4 the item size implies the type.
absl::StatusOr<DType> DTypeFromItemSize(int size) {
  switch (size) {
    case 4:
      return DType::kFloat32;
    case 2:
      return DType::kInt16;
    case 1:
      return DType::kInt8;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported item size ", size));
}

}  // namespace

absl::StatusOr<Ct2ModelBin> ReadCt2ModelBin(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  Cursor in(*file);
  Ct2ModelBin result;
  ASSIGN_OR_RETURN(uint32_t version, in.Read<uint32_t>("the binary version"));
  if (version < 1 || version > kMaxCt2BinaryVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unsupported CTranslate2 binary version ", version,
                     " (supported: 1 to ", kMaxCt2BinaryVersion, ")"));
  }
  result.version = static_cast<int>(version);
  if (version >= 2) {
    ASSIGN_OR_RETURN(result.spec, in.ReadString("the spec name"));
    ASSIGN_OR_RETURN(uint32_t revision, in.Read<uint32_t>("the spec revision"));
    result.revision = static_cast<int>(revision);
  }
  ASSIGN_OR_RETURN(uint32_t count, in.Read<uint32_t>("the variable count"));
  std::map<std::string, RawTensor> tensors;
  for (uint32_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(std::string name, in.ReadString(absl::StrCat("the name of variable #", i)));
    const std::string what = absl::StrCat("tensor ", name);
    ASSIGN_OR_RETURN(uint8_t rank, in.Read<uint8_t>(what));
    RawTensor tensor;
    for (int d = 0; d < rank; ++d) {
      ASSIGN_OR_RETURN(uint32_t dim, in.Read<uint32_t>(what));
      tensor.shape.push_back(dim);
    }
    uint64_t num_bytes;
    if (version >= 4) {
      ASSIGN_OR_RETURN(uint8_t type_id, in.Read<uint8_t>(what));
      absl::StatusOr<DType> dtype = DTypeFromCt2Id(type_id);
      if (!dtype.ok()) return in.Corrupt(absl::StrCat(what, ": ", dtype.status().message()));
      tensor.dtype = *dtype;
      ASSIGN_OR_RETURN(uint32_t bytes, in.Read<uint32_t>(what));
      num_bytes = bytes;
    } else {
      ASSIGN_OR_RETURN(uint8_t item_size, in.Read<uint8_t>(what));
      absl::StatusOr<DType> dtype = DTypeFromItemSize(item_size);
      if (!dtype.ok()) return in.Corrupt(absl::StrCat(what, ": ", dtype.status().message()));
      tensor.dtype = *dtype;
      ASSIGN_OR_RETURN(uint32_t elements, in.Read<uint32_t>(what));
      num_bytes = static_cast<uint64_t>(elements) * item_size;
    }
    const int64_t elements = CheckedNumElements(tensor.shape);
    if (elements < 0) {
      return in.Corrupt(absl::StrCat(what, ": shape ", ShapeString(tensor.shape), " is too large"));
    }
    const uint64_t expected = static_cast<uint64_t>(elements) * DTypeSize(tensor.dtype);
    if (num_bytes != expected) {
      return in.Corrupt(absl::StrCat(what, " declares ", num_bytes, " bytes but its shape ",
                                     ShapeString(tensor.shape), " of ", DTypeName(tensor.dtype),
                                     " needs ", expected));
    }
    ASSIGN_OR_RETURN(tensor.data, in.Take(num_bytes, what));
    tensor.num_bytes = num_bytes;
    tensors[name] = std::move(tensor);
  }
  if (version >= 3) {
    ASSIGN_OR_RETURN(uint32_t aliases, in.Read<uint32_t>("the alias count"));
    for (uint32_t i = 0; i < aliases; ++i) {
      ASSIGN_OR_RETURN(std::string alias, in.ReadString("an alias name"));
      ASSIGN_OR_RETURN(std::string target, in.ReadString("an alias target"));
      auto it = tensors.find(target);
      if (it == tensors.end()) {
        return in.Corrupt(absl::StrCat("alias ", alias, " refers to unknown tensor ", target));
      }
      tensors[alias] = it->second;
      // A quantized target shares its scale with the alias.
      if (auto scale = tensors.find(target + "_scale"); scale != tensors.end()) {
        tensors[alias + "_scale"] = scale->second;
      }
    }
  }
  if (!in.at_end()) return in.Corrupt("unexpected data after the last variable");
  result.variables = std::make_unique<TensorFile>(std::move(file), std::move(tensors));
  return result;
}

}  // namespace rosetta
