#include "server/library_log.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "server/log.h"

namespace rosetta::server {

LogRateLimiter::LogRateLimiter(int burst, absl::Duration interval)
    : burst_(burst), interval_(interval), tokens_(burst) {}

bool LogRateLimiter::Admit(absl::Time now, int64_t* suppressed) {
  absl::MutexLock lock(&mu_);
  if (last_ != absl::InfinitePast() && now > last_) {
    tokens_ = std::min<double>(burst_, tokens_ + absl::FDivDuration(now - last_, interval_));
  }
  if (now > last_) last_ = now;
  if (tokens_ < 1) {
    ++suppressed_;
    return false;
  }
  tokens_ -= 1;
  *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

namespace {

const char* LevelName(google::protobuf::LogLevel level) {
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      return "INFO";
    case google::protobuf::LOGLEVEL_WARNING:
      return "WARNING";
    case google::protobuf::LOGLEVEL_ERROR:
      return "ERROR";
    default:
      return "FATAL";
  }
}

void ProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                 const std::string& message) {
  // Never destroyed: library threads may log while the process exits.
  static auto* limiter = new LogRateLimiter(20, absl::Seconds(3));
  int64_t suppressed = 0;
  if (level < google::protobuf::LOGLEVEL_FATAL && !limiter->Admit(absl::Now(), &suppressed)) {
    return;
  }
  const char* slash = std::strrchr(filename, '/');
  Log("protobuf ", LevelName(level), " ", slash != nullptr ? slash + 1 : filename, ":", line, ": ",
      message,
      suppressed > 0 ? absl::StrCat(" (", suppressed, " protobuf messages dropped before this one)")
                     : "");
}

void GrpcLog(gpr_log_func_args* args) {
  // Never destroyed: library threads may log while the process exits.
  static auto* limiter = new LogRateLimiter(20, absl::Seconds(3));
  int64_t suppressed = 0;
  if (!limiter->Admit(absl::Now(), &suppressed)) return;
  const char* slash = std::strrchr(args->file, '/');
  Log("grpc ", gpr_log_severity_string(args->severity), " ",
      slash != nullptr ? slash + 1 : args->file, ":", args->line, ": ", args->message,
      suppressed > 0 ? absl::StrCat(" (", suppressed, " grpc messages dropped before this one)")
                     : "");
}

}  // namespace

void RouteProtobufLogs() { google::protobuf::SetLogHandler(&ProtobufLog); }

void RouteGrpcLogs() { gpr_set_log_function(&GrpcLog); }

}  // namespace rosetta::server
