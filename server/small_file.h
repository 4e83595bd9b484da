// Reading the small files an operator points the daemon at (certificates, keys): a regular file
// of bounded size, read without blocking on a FIFO, with errors that name the flag and the file.
// Thread-safe: no state.
#ifndef ROSETTA_SERVER_SMALL_FILE_H_
#define ROSETTA_SERVER_SMALL_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta::server {

// The contents of `path`, given by --`flag`. NotFound ("--flag: cannot read PATH") when it cannot
// be opened or read; InvalidArgument when it is not a regular file or has more than `max_bytes`.
absl::StatusOr<std::string> ReadSmallFile(absl::string_view flag, const std::string& path,
                                          size_t max_bytes);

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_SMALL_FILE_H_
