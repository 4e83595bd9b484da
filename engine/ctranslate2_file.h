// Reader of CTranslate2's `model.bin`, binary format versions 1 to 6.
//
// Layout (little-endian): uint32 version; from version 2, the spec name (string) and a uint32 spec
// revision; uint32 variable count; per variable: name (string), uint8 rank, rank x uint32 dims,
// then either (version < 4) a uint8 item size and a uint32 element count, or (version >= 4) a
// uint8 data type id and a uint32 byte count; then the data. From version 3, a uint32 alias count
// and (alias, target) string pairs follow. A string is a uint16 length that counts a final NUL.
#ifndef ROSETTA_ENGINE_CTRANSLATE2_FILE_H_
#define ROSETTA_ENGINE_CTRANSLATE2_FILE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/tensor_file.h"

namespace rosetta {

struct Ct2ModelBin {
  int version = 0;
  std::string spec;  // empty before version 2
  int revision = 1;
  // Variables by name; aliases appear as entries of their own that share the target's data.
  std::unique_ptr<TensorFile> variables;
};

inline constexpr int kMaxCt2BinaryVersion = 6;

absl::StatusOr<Ct2ModelBin> ReadCt2ModelBin(const std::string& path);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_CTRANSLATE2_FILE_H_
