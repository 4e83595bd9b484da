// Messages the libraries write on their own, routed into the daemon's log with a rate limit.
// protobuf's parser logs an ERROR for every string field with invalid UTF-8 that a client sends
// (the call itself fails with a status), and gRPC one for every failed TLS handshake (a plaintext
// client, a port scanner); unlimited, any client could flood the log with them.
#ifndef ROSETTA_SERVER_LIBRARY_LOG_H_
#define ROSETTA_SERVER_LIBRARY_LOG_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rosetta::server {

// A token bucket: up to `burst` messages at once, then one per `interval`. Thread-safe.
class LogRateLimiter {
 public:
  LogRateLimiter(int burst, absl::Duration interval);

  // Whether a message at `now` may be written. When it may, `*suppressed` is the number of
  // messages refused since the last one admitted (then reset).
  bool Admit(absl::Time now, int64_t* suppressed);

 private:
  const int burst_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  double tokens_ ABSL_GUARDED_BY(mu_);
  absl::Time last_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t suppressed_ ABSL_GUARDED_BY(mu_) = 0;
};

// Sends protobuf's log messages to Log() ("protobuf ERROR wire_format_lite.cc:618: ..."), at most
// 20 at once and then one per 3 seconds, each admitted line saying how many were dropped before
// it. FATAL messages always pass. Call once, early in main(), before any thread parses messages.
void RouteProtobufLogs();

// Sends gRPC's log messages (by default only its errors: GRPC_VERBOSITY) to Log() ("grpc E
// ssl_transport_security.cc:1501: Handshake failed ..."), with the same limits as protobuf's,
// counted separately. Call once, early in main(), before gRPC starts.
void RouteGrpcLogs();

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_LIBRARY_LOG_H_
