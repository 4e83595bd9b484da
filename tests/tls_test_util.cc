#include "tests/tls_test_util.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::testing {

std::string TestCertificates() {
  static const std::string* dir = [] {
    // A directory of the whole process, not MakeTempDir's of the current test.
    auto* made = new std::string(ProcessTempDir() + "/certs");
    for (const char* prefix : {"", "other-"}) {
      const std::string command =
          absl::StrCat(ROSETTA_SOURCE_DIR, "/tests/make_test_certificates.sh ", *made, " ", prefix);
      if (std::system(command.c_str()) != 0) {
        ADD_FAILURE() << command << " failed";
        made->clear();
      }
    }
    return made;
  }();
  return *dir;
}

grpc::Status AlwaysServing::Check(grpc::ServerContext*, const grpc::health::v1::HealthCheckRequest*,
                                  grpc::health::v1::HealthCheckResponse* response) {
  response->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
  return grpc::Status::OK;
}

}  // namespace rosetta::testing
