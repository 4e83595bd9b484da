// TLS on the gRPC port (server/tls): the server credentials in a real handshake (TLS, mutual TLS),
// certificates rotated while serving, and the private copies gRPC reads. The certificates are
// made for each run by tests/make_test_certificates.sh (openssl).
#include "server/tls.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

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

// A directory laid out as the kubelet lays out a Secret volume: tls.crt and tls.key are symlinks
// into ..data, itself a symlink to the current version's directory, swapped in one rename.
class SecretVolume {
 public:
  explicit SecretVolume(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directory_symlink("..data/tls.crt", dir_ + "/tls.crt");
    std::filesystem::create_directory_symlink("..data/tls.key", dir_ + "/tls.key");
  }
  std::string cert_file() const { return dir_ + "/tls.crt"; }
  std::string key_file() const { return dir_ + "/tls.key"; }

  // A new version with both files, taken into use at once.
  void Publish(const std::string& cert, const std::string& key) {
    const std::string version = absl::StrCat("..version", ++versions_);
    std::filesystem::create_directory(dir_ + "/" + version);
    testing::WriteFile(dir_ + "/" + version + "/tls.crt", cert);
    testing::WriteFile(dir_ + "/" + version + "/tls.key", key);
    std::filesystem::create_directory_symlink(version, dir_ + "/..data_tmp");
    std::filesystem::rename(dir_ + "/..data_tmp", dir_ + "/..data");
  }

 private:
  const std::string dir_;
  int versions_ = 0;
};

// Whether `condition` holds within `timeout`, polling.

TEST_F(TlsTest, PicksUpRotatedCertificatesAndKeepsTheLastGoodPair) {
  SecretVolume volume(testing::MakeTempDir("secret"));
  volume.Publish(testing::ReadFile(File("server.crt")), testing::ReadFile(File("server.key")));
  HealthServer server({.cert_file = volume.cert_file(),
                       .key_file = volume.key_file(),
                       .reload_interval = absl::Seconds(1)});
  ASSERT_TRUE(server.started());
  const TlsCertificates& certificates = server.certificates();
  const auto first_ca = grpc::SslCredentials(TrustingCa(File("ca.crt")));
  const auto second_ca = grpc::SslCredentials(TrustingCa(File("other-ca.crt")));
  ASSERT_TRUE(Check(server.address(), first_ca).ok());

  // A certificate of the other CA: clients that trust it get through within a few intervals.
  volume.Publish(testing::ReadFile(File("other-server.crt")),
                 testing::ReadFile(File("other-server.key")));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return Check(server.address(), second_ca).ok(); }));
  EXPECT_FALSE(Check(server.address(), first_ca).ok());
  EXPECT_EQ(certificates.updates_accepted(), 1);
  EXPECT_EQ(certificates.updates_refused(), 0);
  EXPECT_EQ(certificates.summary().issuer, "CN=Rosetta test CA other-");

  // Broken updates: a certificate cut short, then a key of another certificate. Each is refused
  // once, and the last good pair stays in use.
  const std::string other_crt = testing::ReadFile(File("other-server.crt"));
  volume.Publish(other_crt.substr(0, other_crt.size() / 2),
                 testing::ReadFile(File("other-server.key")));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return certificates.updates_refused() == 1; }));
  volume.Publish(other_crt, testing::ReadFile(File("server.key")));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return certificates.updates_refused() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // gRPC's own interval
  grpc::Status status = Check(server.address(), second_ca);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(certificates.updates_refused(), 2);
  EXPECT_EQ(certificates.updates_accepted(), 1);

  // Fixed: taken into use.
  volume.Publish(testing::ReadFile(File("server.crt")), testing::ReadFile(File("server.key")));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return Check(server.address(), first_ca).ok(); }));
  EXPECT_EQ(certificates.updates_accepted(), 2);
}

TEST_F(TlsTest, RestoresPrivateCopiesThatDisappear) {
  TlsOptions tls = ServerTls();
  tls.reload_interval = absl::Seconds(1);
  HealthServer server(tls);
  ASSERT_TRUE(server.started());
  std::filesystem::remove(server.certificates().private_dir() + "/current");
  EXPECT_TRUE(testing::Within(absl::Seconds(20), [&] {
    return std::filesystem::exists(server.certificates().private_dir() + "/current/tls.key");
  }));
  const auto ca = grpc::SslCredentials(TrustingCa(File("ca.crt")));
  EXPECT_TRUE(testing::Within(absl::Seconds(20), [&] { return Check(server.address(), ca).ok(); }));
  EXPECT_EQ(server.certificates().updates_accepted(), 0);
}

TEST_F(TlsTest, KeepsThePrivateCopiesPrivateAndRemovesThem) {
  TlsOptions tls = ServerTls();
  tls.scratch_dir = testing::MakeTempDir("scratch");
  const mode_t previous = umask(0);  // the worst a process could be started with
  absl::StatusOr<std::unique_ptr<TlsCertificates>> certificates = TlsCertificates::Start(tls);
  umask(previous);
  ASSERT_TRUE(certificates.ok()) << certificates.status();
  const std::string dir = (*certificates)->private_dir();
  EXPECT_EQ(std::filesystem::path(dir).parent_path(), tls.scratch_dir);
  using std::filesystem::perms;
  auto permissions = [](const std::string& path) {
    return std::filesystem::status(path).permissions() & perms::all;
  };
  EXPECT_EQ(permissions(dir), perms::owner_all);
  EXPECT_EQ(permissions(dir + "/current"), perms::owner_all);  // the generation it points to
  EXPECT_EQ(permissions(dir + "/current/tls.key"), perms::owner_read | perms::owner_write);
  EXPECT_EQ(testing::ReadFile(dir + "/current/tls.key"), testing::ReadFile(File("server.key")));
  certificates->reset();
  EXPECT_TRUE(std::filesystem::is_empty(tls.scratch_dir));
}

TEST_F(TlsTest, RemovesWhatDeadProcessesLeftButNotWhatLiveOnesUse) {
  TlsOptions tls = ServerTls();
  tls.scratch_dir = testing::MakeTempDir("scratch");
  // A live one, and what a killed process left: a directory with an unlocked lock file.
  absl::StatusOr<std::unique_ptr<TlsCertificates>> live = TlsCertificates::Start(tls);
  ASSERT_TRUE(live.ok()) << live.status();
  const std::string left = tls.scratch_dir + "/rosettad-tls-dead01";
  std::filesystem::create_directories(left + "/1");
  testing::WriteFile(left + "/lock", "");
  testing::WriteFile(left + "/1/tls.key", "a key");
  const std::string unrelated = tls.scratch_dir + "/something-else";
  std::filesystem::create_directory(unrelated);

  absl::StatusOr<std::unique_ptr<TlsCertificates>> next = TlsCertificates::Start(tls);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_FALSE(std::filesystem::exists(left));
  EXPECT_TRUE(std::filesystem::exists((*live)->private_dir() + "/current/tls.key"));
  EXPECT_TRUE(std::filesystem::exists(unrelated));
}

TEST_F(TlsTest, StartRefusesWhatCheckTlsFilesRefuses) {
  absl::StatusOr<std::unique_ptr<TlsCertificates>> certificates = TlsCertificates::Start(
      {.cert_file = File("server.crt"), .key_file = File("other-server.key")});
  EXPECT_EQ(certificates.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(certificates.status().message(), HasSubstr("does not belong"));
}

}  // namespace
}  // namespace rosetta::server
