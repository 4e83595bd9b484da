#include "engine/pytorch_checkpoint.h"

#include <zip.h>

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/pickle.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

struct StorageType {
  const char* global;  // as the pickle names it
  const char* dtype_name;
  bool supported;
  DType dtype;
};

// The storage classes torch.save names in a persistent id (torch/storage.py). The unsupported
// ones are accepted by the unpickler so that the error can name the tensor and its dtype.
constexpr StorageType kStorageTypes[] = {
    {"torch.FloatStorage", "float32", true, DType::kFloat32},
    {"torch.HalfStorage", "float16", true, DType::kFloat16},
    {"torch.BFloat16Storage", "bfloat16", true, DType::kBFloat16},
    {"torch.LongStorage", "int64", true, DType::kInt64},
    {"torch.IntStorage", "int32", true, DType::kInt32},
    {"torch.ShortStorage", "int16", true, DType::kInt16},
    {"torch.CharStorage", "int8", true, DType::kInt8},
    {"torch.ByteStorage", "uint8", true, DType::kUInt8},
    {"torch.BoolStorage", "bool", true, DType::kBool},
    {"torch.DoubleStorage", "float64", false, DType::kFloat32},
    {"torch.ComplexFloatStorage", "complex64", false, DType::kFloat32},
    {"torch.ComplexDoubleStorage", "complex128", false, DType::kFloat32},
    {"torch.QInt8Storage", "qint8", false, DType::kFloat32},
    {"torch.QUInt8Storage", "quint8", false, DType::kFloat32},
    {"torch.QInt32Storage", "qint32", false, DType::kFloat32},
};

constexpr absl::string_view kRebuildTensor = "torch._utils._rebuild_tensor_v2";
constexpr absl::string_view kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr absl::string_view kRebuildParameterWithState =
    "torch._utils._rebuild_parameter_with_state";

const UnpickleOptions& StateDictOptions() {
  static const UnpickleOptions* options = [] {
    auto* o = new UnpickleOptions;
    o->allowed_globals = {"collections.OrderedDict", std::string(kRebuildTensor),
                          std::string(kRebuildParameter), std::string(kRebuildParameterWithState)};
    for (const StorageType& t : kStorageTypes) o->allowed_globals.insert(t.global);
    return o;
  }();
  return *options;
}

using Kind = PickleValue::Kind;

absl::StatusOr<std::vector<int64_t>> IntTuple(const PickleValue& v) {
  if (!v.is(Kind::kTuple)) return absl::DataLossError("is not a tuple");
  std::vector<int64_t> out;
  for (const PickleValue* item : v.items) {
    if (!item->is(Kind::kInt) || item->int_value < 0) {
      return absl::DataLossError("holds a value that is not a non-negative int");
    }
    out.push_back(item->int_value);
  }
  return out;
}

absl::Status ParseStorage(const PickleValue& pid, PytorchTensorRecord& record) {
  // ('storage', torch.FloatStorage, key, location, number of elements)
  if (!pid.is(Kind::kPersistentId) || pid.items.size() != 1 || !pid.items[0]->is(Kind::kTuple) ||
      pid.items[0]->items.size() != 5) {
    return absl::DataLossError("the storage is not a persistent id of 5 values");
  }
  const std::vector<const PickleValue*>& id = pid.items[0]->items;
  if (!id[0]->is(Kind::kString) || id[0]->string_value != "storage" || !id[1]->is(Kind::kGlobal) ||
      !id[2]->is(Kind::kString) || !id[4]->is(Kind::kInt) || id[4]->int_value < 0) {
    return absl::DataLossError("malformed storage persistent id");
  }
  const StorageType* type = nullptr;
  for (const StorageType& t : kStorageTypes) {
    if (id[1]->string_value == t.global) type = &t;
  }
  if (type == nullptr) {
    return absl::DataLossError(absl::StrCat(id[1]->string_value, " is not a storage type"));
  }
  if (!type->supported) {
    return absl::InvalidArgumentError(
        absl::StrCat("has dtype ", type->dtype_name, " (", type->global,
                     "), which is not supported: float32, float16, bfloat16 and integer tensors "
                     "are read"));
  }
  record.dtype = type->dtype;
  record.storage_key = id[2]->string_value;
  record.storage_elements = id[4]->int_value;
  return absl::OkStatus();
}

absl::Status ParseTensor(const PickleValue& value, PytorchTensorRecord& record) {
  const PickleValue* v = &value;
  // nn.Parameter(tensor, requires_grad, hooks[, state]) wraps the tensor.
  if (v->IsCallOf(kRebuildParameter) || v->IsCallOf(kRebuildParameterWithState)) {
    const PickleValue& args = *v->items[1];
    if (args.items.size() < 3) return absl::DataLossError("a parameter with too few arguments");
    v = args.items[0];
  }
  if (!v->IsCallOf(kRebuildTensor)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "is a ", PickleKindName(v->kind),
        v->is(Kind::kCall) ? " of " + v->items[0]->string_value : "", ", not a tensor"));
  }
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks
  //                    [, metadata])
  const std::vector<const PickleValue*>& args = v->items[1]->items;
  if (args.size() != 6 && args.size() != 7) {
    return absl::DataLossError(
        absl::StrCat("_rebuild_tensor_v2 with ", args.size(), " arguments (6 or 7 expected)"));
  }
  RETURN_IF_ERROR(ParseStorage(*args[0], record));
  if (!args[1]->is(Kind::kInt) || args[1]->int_value < 0) {
    return absl::DataLossError("the storage offset is not a non-negative int");
  }
  record.storage_offset = args[1]->int_value;
  absl::StatusOr<std::vector<int64_t>> shape = IntTuple(*args[2]);
  if (!shape.ok()) return absl::DataLossError(absl::StrCat("the size ", shape.status().message()));
  absl::StatusOr<std::vector<int64_t>> strides = IntTuple(*args[3]);
  if (!strides.ok()) {
    return absl::DataLossError(absl::StrCat("the stride ", strides.status().message()));
  }
  if (shape->size() != strides->size()) {
    return absl::DataLossError(absl::StrCat("size ", ShapeString(*shape), " and stride ",
                                            ShapeString(*strides), " differ in length"));
  }
  record.shape = std::move(*shape);
  record.strides = std::move(*strides);
  return absl::OkStatus();
}

// The owner of an open archive.
struct ZipCloser {
  void operator()(zip_t* zip) const { zip_discard(zip); }
};
using ZipArchive = std::unique_ptr<zip_t, ZipCloser>;
struct ZipFileCloser {
  void operator()(zip_file_t* file) const { zip_fclose(file); }
};

// Extracts entry `index` whole, checking its size and CRC.
absl::StatusOr<AlignedVector<uint8_t>> ReadEntry(zip_t* zip, zip_uint64_t index,
                                                 const std::string& where) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(zip, index, 0, &st) != 0 || (st.valid & ZIP_STAT_SIZE) == 0 ||
      (st.valid & ZIP_STAT_COMP_SIZE) == 0 || (st.valid & ZIP_STAT_COMP_METHOD) == 0) {
    return absl::DataLossError(
        absl::StrCat(where, ": cannot stat: ", zip_error_strerror(zip_get_error(zip))));
  }
  if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": compression method ", st.comp_method,
                                                   " (only stored and deflated entries are read)"));
  }
  // Deflate cannot expand more than about 1032 times: a larger claim is a zip bomb or a lie.
  const bool plausible = st.comp_method == ZIP_CM_STORE
                             ? st.size == st.comp_size
                             : st.size / 1100 <= st.comp_size && st.size <= (uint64_t{1} << 40);
  if (!plausible) {
    return absl::DataLossError(absl::StrCat(where, ": claims ", st.size, " bytes from ",
                                            st.comp_size, " compressed bytes"));
  }
  std::unique_ptr<zip_file_t, ZipFileCloser> file(zip_fopen_index(zip, index, 0));
  if (file == nullptr) {
    return absl::DataLossError(
        absl::StrCat(where, ": cannot open: ", zip_error_strerror(zip_get_error(zip))));
  }
  AlignedVector<uint8_t> bytes(st.size);
  uint64_t done = 0;
  while (done < st.size) {
    const zip_int64_t n = zip_fread(file.get(), bytes.data() + done, st.size - done);
    if (n <= 0) {
      return absl::DataLossError(
          absl::StrCat(where, ": cannot read: ",
                       n < 0 ? zip_error_strerror(zip_file_get_error(file.get())) : "ends early"));
    }
    done += n;
  }
  // libzip checks the CRC when a read reaches the end of the entry.
  uint8_t extra;
  if (zip_fread(file.get(), &extra, 1) != 0) {
    return absl::DataLossError(
        absl::StrCat(where, ": corrupt: ", zip_error_strerror(zip_file_get_error(file.get()))));
  }
  return bytes;
}

struct Storage {
  DType dtype;
  int64_t elements;
  const uint8_t* data;
};

// Whether `strides` are those of a row-major tensor of `shape` (dimensions of size 1 aside).
bool IsContiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

// Copies the strided view `record` of `storage` to row-major order. REQUIRES: bounds checked.
AlignedVector<uint8_t> CopyContiguous(const PytorchTensorRecord& record, const uint8_t* storage,
                                      int64_t elements) {
  const int size = DTypeSize(record.dtype);
  const size_t rank = record.shape.size();
  AlignedVector<uint8_t> out(elements * size);
  std::vector<int64_t> index(rank, 0);
  int64_t source = record.storage_offset;
  for (int64_t i = 0; i < elements; ++i) {
    std::memcpy(out.data() + i * size, storage + source * size, size);
    for (size_t d = rank; d-- > 0;) {  // odometer: advance the last dimension first
      source += record.strides[d];
      if (++index[d] < record.shape[d]) break;
      source -= record.strides[d] * record.shape[d];
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<PytorchTensorRecord>> ParseStateDictPickle(absl::string_view pickle,
                                                                      absl::string_view where) {
  ASSIGN_OR_RETURN(Pickle parsed, Unpickle(pickle, StateDictOptions(), where));
  const PickleValue& root = parsed.root();
  if (!root.is(Kind::kDict)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": holds a ", PickleKindName(root.kind),
                                                   ", not a state dict (a dict of tensors)"));
  }
  std::vector<PytorchTensorRecord> records;
  std::map<std::string, int> seen;
  for (const auto& [key, value] : root.entries) {
    if (!key->is(Kind::kString)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": a state dict key is a ", PickleKindName(key->kind)));
    }
    PytorchTensorRecord record;
    record.name = key->string_value;
    if (absl::Status s = ParseTensor(*value, record); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat(where, ": tensor ", record.name, ": ", s.message()));
    }
    if (seen[record.name]++ > 0) {
      return absl::DataLossError(absl::StrCat(where, ": tensor ", record.name, " appears twice"));
    }
    records.push_back(std::move(record));
  }
  return records;
}

absl::StatusOr<std::unique_ptr<TensorFile>> ReadPytorchCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() < 4 || std::memcmp(file->data(), "PK\x03\x04", 4) != 0) {
    if (file->size() >= 2 && file->data()[0] == 0x80 && file->data()[1] <= 5) {
      return absl::InvalidArgumentError(
          absl::StrCat(path,
                       ": the legacy torch.save format (before PyTorch 1.6) is not read; save it "
                       "again with a recent torch.save"));
    }
    return absl::DataLossError(absl::StrCat(path, ": not a zip archive (torch.save writes one)"));
  }
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(file->data(), file->size(), 0, &error);
  if (source == nullptr) {
    absl::Status s = absl::InternalError(absl::StrCat(path, ": ", zip_error_strerror(&error)));
    zip_error_fini(&error);
    return s;
  }
  ZipArchive zip(zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error));
  if (zip == nullptr) {
    zip_source_free(source);
    absl::Status s = absl::DataLossError(
        absl::StrCat(path, ": not a readable zip archive: ", zip_error_strerror(&error)));
    zip_error_fini(&error);
    return s;
  }
  zip_error_fini(&error);

  // The entries are <stem>/data.pkl, <stem>/data/<key>, ...; the stem is the saved file's.
  const zip_int64_t entries = zip_get_num_entries(zip.get(), 0);
  std::string stem;
  zip_int64_t pickle_index = -1;
  for (zip_int64_t i = 0; i < entries; ++i) {
    const char* name = zip_get_name(zip.get(), i, ZIP_FL_ENC_RAW);
    if (name == nullptr) continue;
    const absl::string_view n(name);
    const size_t slash = n.find('/');
    if (slash != absl::string_view::npos && n.substr(slash + 1) == "data.pkl") {
      if (pickle_index >= 0) {
        return absl::DataLossError(absl::StrCat(path, ": holds more than one */data.pkl"));
      }
      pickle_index = i;
      stem = std::string(n.substr(0, slash + 1));
    }
  }
  if (pickle_index < 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": no */data.pkl: not a checkpoint written by torch.save"));
  }
  const zip_int64_t byteorder = zip_name_locate(zip.get(), (stem + "byteorder").c_str(), 0);
  if (byteorder >= 0) {
    ASSIGN_OR_RETURN(AlignedVector<uint8_t> order,
                     ReadEntry(zip.get(), byteorder, absl::StrCat(path, ": ", stem, "byteorder")));
    if (std::string(order.begin(), order.end()) != "little") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": saved on a big-endian machine (only little-endian is read)"));
    }
  }
  const std::string pickle_where = absl::StrCat(path, ": ", stem, "data.pkl");
  ASSIGN_OR_RETURN(AlignedVector<uint8_t> pickle, ReadEntry(zip.get(), pickle_index, pickle_where));
  ASSIGN_OR_RETURN(
      std::vector<PytorchTensorRecord> records,
      ParseStateDictPickle(
          absl::string_view(reinterpret_cast<const char*>(pickle.data()), pickle.size()),
          pickle_where));

  TensorBacking backing;
  std::map<std::string, Storage> storages;
  std::map<std::string, RawTensor> tensors;
  for (const PytorchTensorRecord& record : records) {
    auto tensor_error = [&](absl::string_view message) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", record.name, ": ", message));
    };
    const int size = DTypeSize(record.dtype);
    auto it = storages.find(record.storage_key);
    if (it == storages.end()) {
      const std::string entry = absl::StrCat(stem, "data/", record.storage_key);
      const zip_int64_t index = zip_name_locate(zip.get(), entry.c_str(), 0);
      if (index < 0) return tensor_error(absl::StrCat("its storage ", entry, " is missing"));
      ASSIGN_OR_RETURN(AlignedVector<uint8_t> bytes,
                       ReadEntry(zip.get(), index, absl::StrCat(path, ": ", entry)));
      if (record.storage_elements > static_cast<int64_t>(bytes.size()) / size ||
          static_cast<int64_t>(bytes.size()) != record.storage_elements * size) {
        return tensor_error(absl::StrCat("its storage ", entry, " has ", bytes.size(),
                                         " bytes, not ", record.storage_elements, " elements of ",
                                         DTypeName(record.dtype)));
      }
      const uint8_t* data = bytes.data();
      backing.buffers.push_back(std::move(bytes));
      it =
          storages.emplace(record.storage_key, Storage{record.dtype, record.storage_elements, data})
              .first;
    } else if (it->second.dtype != record.dtype || it->second.elements != record.storage_elements) {
      return tensor_error(absl::StrCat("storage ", record.storage_key,
                                       " is shared with another tensor of another dtype or size"));
    }
    const Storage& storage = it->second;

    const int64_t elements = CheckedNumElements(record.shape);
    if (elements < 0) {
      return tensor_error(absl::StrCat("shape ", ShapeString(record.shape), " is too large"));
    }
    if (record.storage_offset > storage.elements) {
      return tensor_error(absl::StrCat("storage offset ", record.storage_offset,
                                       " lies beyond its storage of ", storage.elements));
    }
    if (elements > 0) {
      // The last element the view reaches must lie inside the storage.
      int64_t last = record.storage_offset;
      for (size_t d = 0; d < record.shape.size(); ++d) {
        int64_t step;
        if (__builtin_mul_overflow(record.shape[d] - 1, record.strides[d], &step) ||
            __builtin_add_overflow(last, step, &last)) {
          return tensor_error("its strides overflow");
        }
      }
      if (last >= storage.elements) {
        return tensor_error(absl::StrCat("size ", ShapeString(record.shape), ", stride ",
                                         ShapeString(record.strides), " and offset ",
                                         record.storage_offset, " reach beyond its storage of ",
                                         storage.elements, " elements"));
      }
    }
    RawTensor tensor;
    tensor.dtype = record.dtype;
    tensor.shape = record.shape;
    tensor.num_bytes = static_cast<size_t>(elements) * size;
    if (elements == 0 || IsContiguous(record.shape, record.strides)) {
      tensor.data = storage.data + record.storage_offset * size;
    } else {
      backing.buffers.push_back(CopyContiguous(record, storage.data, elements));
      tensor.data = backing.buffers.back().data();
    }
    tensors[record.name] = std::move(tensor);
  }
  // Every tensor now points into an extracted buffer: the archive's mapping can go.
  return std::make_unique<TensorFile>(path, std::move(tensors), std::move(backing));
}

}  // namespace rosetta
