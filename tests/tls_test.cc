// TLS on the gRPC port: the start-up checks of the certificate files (CheckTlsFiles) and the
// server credentials in a real handshake: TLS, mutual TLS, and certificates rotated while serving.
// The certificates are made for each run by tests/make_test_certificates.sh (openssl).
#include "server/tls.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/tls_test_util.h"

namespace rosetta::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  static std::string File(const std::string& name) {
    return testing::TestCertificates() + "/" + name;
  }
  static TlsOptions ServerTls() {
    return {.cert_file = File("server.crt"), .key_file = File("server.key")};
  }
};

TEST_F(TlsTest, NoFilesMeansPlaintext) {
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles({});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_FALSE(TlsOptions{}.enabled());
}

TEST_F(TlsTest, SummarizesAGoodPair) {
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles(ServerTls());
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->subject, "CN=localhost");
  EXPECT_EQ(summary->issuer, "CN=Rosetta test CA");
  EXPECT_EQ(summary->chain_certificates, 1);
  EXPECT_EQ(summary->client_ca_certificates, 0);
  // make_test_certificates.sh makes them valid for 30 days.
  EXPECT_GT(summary->not_after, absl::Now() + absl::Hours(24 * 29));
  EXPECT_LT(summary->not_after, absl::Now() + absl::Hours(24 * 31));
}

TEST_F(TlsTest, CountsAChainAndClientCas) {
  const std::string chain = testing::MakeTempDir("chain") + "/chain.crt";
  testing::WriteFile(chain,
                     testing::ReadFile(File("server.crt")) + testing::ReadFile(File("ca.crt")));
  const std::string cas = testing::MakeTempDir("cas") + "/cas.crt";
  testing::WriteFile(cas,
                     testing::ReadFile(File("ca.crt")) + testing::ReadFile(File("other-ca.crt")));
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = chain, .key_file = File("server.key"), .client_ca_file = cas});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->chain_certificates, 2);
  EXPECT_EQ(summary->client_ca_certificates, 2);
}

TEST_F(TlsTest, RefusesHalfAConfiguration) {
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles({.cert_file = File("server.crt")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_cert_file needs --tls_key_file"));

  summary = CheckTlsFiles({.key_file = File("server.key")});
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_key_file needs --tls_cert_file"));

  summary = CheckTlsFiles({.client_ca_file = File("ca.crt")});
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_client_ca_file needs --tls_cert_file"));
}

TEST_F(TlsTest, NamesTheFileThatCannotBeRead) {
  TlsOptions tls = ServerTls();
  tls.cert_file = File("missing.crt");
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles(tls);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_cert_file"), HasSubstr(tls.cert_file)));

  tls = ServerTls();
  tls.client_ca_file = File("missing-ca.crt");
  summary = CheckTlsFiles(tls);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_client_ca_file"), HasSubstr("missing-ca.crt")));
}

TEST_F(TlsTest, NamesAFileOfTheWrongKind) {
  // A key where the certificate belongs, and the reverse.
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.key"), .key_file = File("server.key")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_cert_file"), HasSubstr("server.key"),
                    HasSubstr("no PEM certificate")));

  summary = CheckTlsFiles({.cert_file = File("server.crt"), .key_file = File("server.crt")});
  EXPECT_THAT(
      summary.status().message(),
      AllOf(HasSubstr("--tls_key_file"), HasSubstr("server.crt"), HasSubstr("no PEM private key")));

  const std::string garbage = testing::MakeTempDir("garbage") + "/ca.crt";
  testing::WriteFile(garbage, "not a certificate\n");
  TlsOptions tls = ServerTls();
  tls.client_ca_file = garbage;
  summary = CheckTlsFiles(tls);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_client_ca_file"), HasSubstr("no PEM certificate")));
}

TEST_F(TlsTest, AcceptsATraditionalEcKeyAfterItsParameters) {
  const std::string key = testing::MakeTempDir("ec") + "/server.key";
  const std::string command =
      absl::StrCat("openssl ecparam -name prime256v1 > ", key, " && openssl ec -in ",
                   File("server.key"), " >> ", key, " 2>/dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0);
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = key});
  EXPECT_TRUE(summary.ok()) << summary.status();
}

TEST_F(TlsTest, RefusesAKeyOfAnotherCertificate) {
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = File("other-server.key")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      summary.status().message(),
      AllOf(HasSubstr("other-server.key"), HasSubstr("does not belong"), HasSubstr("server.crt")));
}

TEST_F(TlsTest, RefusesAnEncryptedKeyWithoutPrompting) {
  const std::string encrypted = testing::MakeTempDir("encrypted") + "/server.key";
  const std::string command = absl::StrCat("openssl pkey -in ", File("server.key"),
                                           " -aes256 -passout pass:secret -out ", encrypted);
  ASSERT_EQ(std::system(command.c_str()), 0);
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = encrypted});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(), HasSubstr("encrypted key is not supported"));
}

// A gRPC server with only the health service, over TLS from `tls` (plaintext without files).
class HealthServer {
 public:
  explicit HealthServer(const TlsOptions& tls) {
    std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
    if (tls.enabled()) {
      absl::StatusOr<std::unique_ptr<TlsCertificates>> certificates = TlsCertificates::Start(tls);
      EXPECT_TRUE(certificates.ok()) << certificates.status();
      if (!certificates.ok()) return;
      certificates_ = std::move(*certificates);
      credentials = certificates_->credentials();
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~HealthServer() {
    if (server_ != nullptr) server_->Shutdown();
  }
  bool started() const { return server_ != nullptr && port_ != 0; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  const TlsCertificates& certificates() const { return *certificates_; }

 private:
  std::unique_ptr<TlsCertificates> certificates_;
  testing::AlwaysServing service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

grpc::SslCredentialsOptions TrustingCa(const std::string& ca_file) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = testing::ReadFile(ca_file);
  return options;
}

// The status of one health check over a fresh channel with `credentials`.
grpc::Status Check(const std::string& address,
                   const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  grpc::ChannelArguments arguments;
  // A fresh connection per check, so that a rotated certificate is seen.
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub =
      grpc::health::v1::Health::NewStub(grpc::CreateCustomChannel(address, credentials, arguments));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  return stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
}

TEST_F(TlsTest, PlaintextServerWithoutFiles) {
  HealthServer server(TlsOptions{});
  ASSERT_TRUE(server.started());
  EXPECT_TRUE(Check(server.address(), grpc::InsecureChannelCredentials()).ok());
}

TEST_F(TlsTest, ServesTlsToClientsThatTrustItsCa) {
  HealthServer server(ServerTls());
  ASSERT_TRUE(server.started());
  grpc::Status status = Check(server.address(), grpc::SslCredentials(TrustingCa(File("ca.crt"))));
  EXPECT_TRUE(status.ok()) << status.error_message();
  // Plaintext, or TLS trusting another CA: no handshake.
  EXPECT_EQ(Check(server.address(), grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(
      Check(server.address(), grpc::SslCredentials(TrustingCa(File("other-ca.crt")))).error_code(),
      grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateOfItsCa) {
  TlsOptions tls = ServerTls();
  tls.client_ca_file = File("ca.crt");
  HealthServer server(tls);
  ASSERT_TRUE(server.started());
  grpc::SslCredentialsOptions options = TrustingCa(File("ca.crt"));
  EXPECT_EQ(Check(server.address(), grpc::SslCredentials(options)).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  options.pem_cert_chain = testing::ReadFile(File("client.crt"));
  options.pem_private_key = testing::ReadFile(File("client.key"));
  grpc::Status status = Check(server.address(), grpc::SslCredentials(options));
  EXPECT_TRUE(status.ok()) << status.error_message();

  options.pem_cert_chain = testing::ReadFile(File("other-client.crt"));
  options.pem_private_key = testing::ReadFile(File("other-client.key"));
  EXPECT_EQ(Check(server.address(), grpc::SslCredentials(options)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

// Replaces `path` in one step (a rename), as a Secret update or cert-manager would.
void Replace(const std::string& path, const std::string& contents) {
  testing::WriteFile(path + ".new", contents);
  std::filesystem::rename(path + ".new", path);
}

// Whether a check with `credentials` succeeds within `timeout`.
bool SucceedsWithin(const std::string& address,
                    const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                    absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (Check(address, credentials).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

TEST_F(TlsTest, PicksUpRotatedCertificatesAndKeepsTheLastGoodPair) {
  const std::string dir = testing::MakeTempDir("rotation");
  TlsOptions tls = {.cert_file = dir + "/tls.crt",
                    .key_file = dir + "/tls.key",
                    .reload_interval = absl::Seconds(1)};
  testing::WriteFile(tls.cert_file, testing::ReadFile(File("server.crt")));
  testing::WriteFile(tls.key_file, testing::ReadFile(File("server.key")));
  HealthServer server(tls);
  ASSERT_TRUE(server.started());
  const auto first_ca = grpc::SslCredentials(TrustingCa(File("ca.crt")));
  const auto second_ca = grpc::SslCredentials(TrustingCa(File("other-ca.crt")));
  ASSERT_TRUE(Check(server.address(), first_ca).ok());

  // A certificate of the other CA: clients that trust it get through within a few intervals.
  Replace(tls.key_file, testing::ReadFile(File("other-server.key")));
  Replace(tls.cert_file, testing::ReadFile(File("other-server.crt")));
  EXPECT_TRUE(SucceedsWithin(server.address(), second_ca, absl::Seconds(20)));
  EXPECT_FALSE(Check(server.address(), first_ca).ok());
  EXPECT_EQ(server.certificates().updates_accepted(), 1);
  EXPECT_EQ(server.certificates().summary().issuer, "CN=Rosetta test CA other-");

  // Broken updates (a half-written file; a key without its certificate): refused, and the last
  // good pair stays in use.
  Replace(tls.cert_file, "-----BEGIN CERTIFICATE-----\ntruncated\n");
  std::this_thread::sleep_for(std::chrono::seconds(3));
  grpc::Status status = Check(server.address(), second_ca);
  EXPECT_TRUE(status.ok()) << status.error_message();
  Replace(tls.cert_file, testing::ReadFile(File("other-server.crt")));
  Replace(tls.key_file, testing::ReadFile(File("server.key")));
  std::this_thread::sleep_for(std::chrono::seconds(3));
  status = Check(server.address(), second_ca);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(server.certificates().updates_accepted(), 1);
  EXPECT_EQ(server.certificates().updates_refused(), 2);

  // Fixed: taken into use.
  Replace(tls.cert_file, testing::ReadFile(File("server.crt")));
  EXPECT_TRUE(SucceedsWithin(server.address(), first_ca, absl::Seconds(20)));
  EXPECT_EQ(server.certificates().updates_accepted(), 2);
}

TEST_F(TlsTest, RemovesItsPrivateCopies) {
  const std::string temp = testing::MakeTempDir("tmpdir");
  const char* previous = std::getenv("TMPDIR");
  const std::string saved = previous != nullptr ? previous : "";
  setenv("TMPDIR", temp.c_str(), 1);
  {
    absl::StatusOr<std::unique_ptr<TlsCertificates>> certificates =
        TlsCertificates::Start(ServerTls());
    ASSERT_TRUE(certificates.ok()) << certificates.status();
    EXPECT_FALSE(std::filesystem::is_empty(temp));
  }
  EXPECT_TRUE(std::filesystem::is_empty(temp));
  if (previous != nullptr) {
    setenv("TMPDIR", saved.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
}

TEST_F(TlsTest, StartRefusesWhatCheckTlsFilesRefuses) {
  absl::StatusOr<std::unique_ptr<TlsCertificates>> certificates = TlsCertificates::Start(
      {.cert_file = File("server.crt"), .key_file = File("other-server.key")});
  EXPECT_EQ(certificates.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(certificates.status().message(), HasSubstr("does not belong"));
}

}  // namespace
}  // namespace rosetta::server
