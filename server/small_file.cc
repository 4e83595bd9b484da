#include "server/small_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace rosetta::server {

absl::StatusOr<std::string> ReadSmallFile(absl::string_view flag, const std::string& path,
                                          size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  struct stat info = {};
  std::string contents;
  absl::Status status;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    status = absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is not a file"));
  } else if (static_cast<size_t>(info.st_size) > max_bytes) {
    status = absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " has ", info.st_size, " bytes; at most ", max_bytes));
  } else {
    char buffer[16384];
    for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) != 0;) {
      if (n < 0 || contents.size() + static_cast<size_t>(n) > max_bytes) {
        status = absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
        break;
      }
      contents.append(buffer, static_cast<size_t>(n));
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return contents;
}

}  // namespace rosetta::server
