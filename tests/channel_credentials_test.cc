// The clients' channel security (client/channel_credentials): which credentials each set of flags
// gives, the errors for unusable files, and a health check against a server with mutual TLS.
#include "client/channel_credentials.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/tls.h"
#include "tests/test_util.h"
#include "tests/tls_test_util.h"

namespace rosetta::client {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class ChannelCredentialsTest : public ::testing::Test {
 protected:
  static std::string File(const std::string& name) {
    return testing::TestCertificates() + "/" + name;
  }
};

TEST_F(ChannelCredentialsTest, TlsWhenAskedForOrImplied) {
  EXPECT_FALSE(ChannelSecurity{}.UsesTls());
  EXPECT_TRUE(ChannelSecurity{.tls = true}.UsesTls());
  EXPECT_TRUE(ChannelSecurity{.ca_file = "ca.crt"}.UsesTls());
  EXPECT_TRUE(ChannelSecurity{.server_name = "rosetta"}.UsesTls());
  grpc::ChannelArguments arguments;
  EXPECT_TRUE(ChannelCredentials({.tls = true}, &arguments).ok());
}

TEST_F(ChannelCredentialsTest, NamesUnusableFiles) {
  grpc::ChannelArguments arguments;
  auto credentials = ChannelCredentials({.ca_file = File("missing.crt")}, &arguments);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(credentials.status().message(),
              AllOf(HasSubstr("--tls_ca_file"), HasSubstr("missing.crt")));

  credentials = ChannelCredentials({.ca_file = File("ca.key")}, &arguments);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(), AllOf(HasSubstr("--tls_ca_file"), HasSubstr("ca.key"),
                                                    HasSubstr("no PEM certificate")));

  credentials = ChannelCredentials(
      {.cert_file = File("client.crt"), .key_file = File("client.crt")}, &arguments);
  EXPECT_THAT(credentials.status().message(),
              AllOf(HasSubstr("--tls_key_file"), HasSubstr("no PEM private key")));

  credentials = ChannelCredentials({.cert_file = File("client.crt")}, &arguments);
  EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(credentials.status().message(), HasSubstr("go together"));
}

TEST_F(ChannelCredentialsTest, AcceptsATraditionalEcKeyAfterItsParameters) {
  // What `openssl ecparam -genkey` writes: EC PARAMETERS, then EC PRIVATE KEY.
  const std::string key = testing::MakeTempDir("ec") + "/client.key";
  const std::string command =
      absl::StrCat("openssl ecparam -name prime256v1 > ", key, " && openssl ec -in ",
                   File("client.key"), " >> ", key, " 2>/dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0);
  grpc::ChannelArguments arguments;
  auto credentials =
      ChannelCredentials({.cert_file = File("client.crt"), .key_file = key}, &arguments);
  EXPECT_TRUE(credentials.ok()) << credentials.status();
}

TEST_F(ChannelCredentialsTest, HintsAtTlsMismatches) {
  // gRPC 1.51's messages for each case.
  EXPECT_THAT(ConnectionHint("failed to connect to all addresses; last error: UNAVAILABLE: "
                             "ipv4:127.0.0.1:51001: Socket closed",
                             /*tls=*/false),
              HasSubstr("may require TLS"));
  EXPECT_THAT(ConnectionHint("failed to connect to all addresses; last error: UNKNOWN: "
                             "ipv4:127.0.0.1:51002: Ssl handshake failed: SSL_ERROR_SSL: "
                             "error:0A00010B:SSL routines::wrong version number",
                             /*tls=*/true),
              HasSubstr("does not seem to use TLS"));
  EXPECT_THAT(ConnectionHint("failed to connect to all addresses; last error: UNKNOWN: "
                             "ipv4:127.0.0.1:51001: Ssl handshake failed: SSL_ERROR_SSL: "
                             "error:0A000086:SSL routines::certificate verify failed",
                             /*tls=*/true),
              HasSubstr("--tls_ca_file"));
  // A server that is down, or a plaintext client whose socket closed for another reason.
  EXPECT_EQ(ConnectionHint("failed to connect to all addresses; last error: UNKNOWN: "
                           "ipv4:127.0.0.1:51003: Failed to connect to remote host: Connection "
                           "refused",
                           false),
            "");
  EXPECT_EQ(ConnectionHint("Socket closed", /*tls=*/true), "");
}

grpc::Status Check(const ChannelSecurity& security, const std::string& address) {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto credentials = ChannelCredentials(security, &arguments);
  EXPECT_TRUE(credentials.ok()) << credentials.status();
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateCustomChannel(address, *credentials, arguments));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
}

TEST_F(ChannelCredentialsTest, ReachesAServerWithMutualTls) {
  testing::AlwaysServing service;
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  int port = 0;
  absl::StatusOr<std::unique_ptr<server::TlsCertificates>> tls =
      server::TlsCertificates::Start({.cert_file = File("server.crt"),
                                      .key_file = File("server.key"),
                                      .client_ca_file = File("ca.crt")});
  ASSERT_TRUE(tls.ok()) << tls.status();
  builder.AddListeningPort("127.0.0.1:0", (*tls)->credentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  // The certificate names localhost and 127.0.0.1; the connection goes to 127.0.0.1.
  const std::string address = absl::StrCat("127.0.0.1:", port);
  const ChannelSecurity security = {
      .ca_file = File("ca.crt"), .cert_file = File("client.crt"), .key_file = File("client.key")};
  grpc::Status status = Check(security, address);
  EXPECT_TRUE(status.ok()) << status.error_message();

  ChannelSecurity named = security;
  named.server_name = "localhost";
  status = Check(named, address);
  EXPECT_TRUE(status.ok()) << status.error_message();

  // A name the certificate does not carry, or no client certificate: refused.
  named.server_name = "elsewhere.example";
  EXPECT_EQ(Check(named, address).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check({.ca_file = File("ca.crt")}, address).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Check({}, address).error_code(), grpc::StatusCode::UNAVAILABLE);
  server->Shutdown();
}

}  // namespace
}  // namespace rosetta::client
