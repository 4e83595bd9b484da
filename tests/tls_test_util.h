// What the TLS tests share: throwaway certificates and a gRPC service to connect to.
#ifndef ROSETTA_TESTS_TLS_TEST_UTIL_H_
#define ROSETTA_TESTS_TLS_TEST_UTIL_H_

#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace rosetta::testing {

// A directory of the test process with two unrelated CAs and their certificates, made by
// tests/make_test_certificates.sh (openssl) at the first call: ca.crt, server.crt (localhost,
// 127.0.0.1), client.crt and their .key files, and the same with the prefix "other-". Fails the
// current test (and returns "") when the script fails.
std::string TestCertificates();

// The standard health service, always SERVING: something to call through a TLS port.
class AlwaysServing final : public grpc::health::v1::Health::Service {
  grpc::Status Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest*,
                     grpc::health::v1::HealthCheckResponse* response) override;
};

}  // namespace rosetta::testing

#endif  // ROSETTA_TESTS_TLS_TEST_UTIL_H_
