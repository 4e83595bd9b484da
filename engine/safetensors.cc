#include "engine/safetensors.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace rosetta {

namespace {

absl::StatusOr<DType> ParseDType(const std::string& name) {
  static const std::map<std::string, DType> kTypes = {
      {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
      {"I8", DType::kInt8},     {"I16", DType::kInt16},   {"I32", DType::kInt32},
      {"I64", DType::kInt64},   {"U8", DType::kUInt8},    {"BOOL", DType::kBool}};
  auto it = kTypes.find(name);
  if (it == kTypes.end())
    return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", name));
  return it->second;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorFile>> ReadSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  auto corrupt = [&](absl::string_view message) {
    return absl::DataLossError(absl::StrCat(path, ": ", message));
  };
  if (file->size() < 8) return corrupt("truncated: no safetensors header");
  uint64_t header_size;
  std::memcpy(&header_size, file->data(), 8);
  if (header_size > file->size() - 8) {
    return corrupt(absl::StrCat("truncated: header of ", header_size, " bytes but the file has ",
                                file->size()));
  }
  const char* header_begin = reinterpret_cast<const char*>(file->data() + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_begin + header_size);
  } catch (const nlohmann::json::parse_error& e) {
    return corrupt(absl::StrCat("invalid JSON header at byte ", e.byte));
  }
  if (!header.is_object()) return corrupt("the header is not a JSON object");

  const uint8_t* data = file->data() + 8 + header_size;
  const uint64_t data_size = file->size() - 8 - header_size;
  std::map<std::string, RawTensor> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    auto tensor_error = [&](absl::string_view message) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", name, ": ", message));
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return tensor_error("malformed header entry");
    }
    RawTensor tensor;
    absl::StatusOr<DType> dtype = ParseDType(entry["dtype"].get<std::string>());
    if (!dtype.ok()) return tensor_error(dtype.status().message());
    tensor.dtype = *dtype;
    for (const auto& dim : entry["shape"]) {
      if (!dim.is_number_unsigned()) return tensor_error("invalid shape");
      tensor.shape.push_back(dim.get<int64_t>());
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return tensor_error("invalid data_offsets");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return tensor_error(absl::StrCat("data [", begin, ", ", end, ") lies outside the ", data_size,
                                       " bytes of data (truncated file?)"));
    }
    const int64_t elements = CheckedNumElements(tensor.shape);
    if (elements < 0) {
      return tensor_error(absl::StrCat("shape ", ShapeString(tensor.shape), " is too large"));
    }
    const uint64_t expected = static_cast<uint64_t>(elements) * DTypeSize(tensor.dtype);
    if (end - begin != expected) {
      return tensor_error(absl::StrCat("has ", end - begin, " bytes but shape ",
                                       ShapeString(tensor.shape), " of ", DTypeName(tensor.dtype),
                                       " needs ", expected));
    }
    tensor.data = data + begin;
    tensor.num_bytes = end - begin;
    tensors[name] = std::move(tensor);
  }
  return std::make_unique<TensorFile>(std::move(file), std::move(tensors));
}

}  // namespace rosetta
