// The daemon's log: one line per event on stderr, prefixed with the UTC time and "rosettad:".
// Thread-safe.
#ifndef ROSETTA_SERVER_LOG_H_
#define ROSETTA_SERVER_LOG_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace rosetta::server {

void LogLine(absl::string_view line);

template <typename... Args>
void Log(const Args&... args) {
  LogLine(absl::StrCat(args...));
}

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_LOG_H_
