// Small file helpers shared by the loaders.
#ifndef ROSETTA_ENGINE_FILE_UTIL_H_
#define ROSETTA_ENGINE_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace rosetta {

bool FileExists(const std::string& path);
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
// Parses a JSON file; the error names the file and, for syntax errors, the byte offset.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_FILE_UTIL_H_
