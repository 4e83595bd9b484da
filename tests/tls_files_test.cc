// The files of the TLS configuration (server/tls_files): which flags go together, and the checks
// of the certificate chain, key and client CAs, with errors that name the flag and the file.
// The certificates are made for each run by tests/make_test_certificates.sh (openssl).
#include "server/tls_files.h"

#include <sys/stat.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"
#include "tests/tls_test_util.h"

namespace rosetta::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class TlsFilesTest : public ::testing::Test {
 protected:
  static std::string File(const std::string& name) {
    return testing::TestCertificates() + "/" + name;
  }
  static TlsOptions ServerTls() {
    return {.cert_file = File("server.crt"), .key_file = File("server.key")};
  }
};

TEST_F(TlsFilesTest, NoFilesMeansPlaintext) {
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles({});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_FALSE(TlsOptions{}.enabled());
}

TEST_F(TlsFilesTest, SummarizesAGoodPair) {
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

TEST_F(TlsFilesTest, CountsAChainAndClientCas) {
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

TEST_F(TlsFilesTest, RefusesHalfAConfiguration) {
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles({.cert_file = File("server.crt")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_cert_file needs --tls_key_file"));

  summary = CheckTlsFiles({.key_file = File("server.key")});
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_key_file needs --tls_cert_file"));

  summary = CheckTlsFiles({.client_ca_file = File("ca.crt")});
  EXPECT_THAT(summary.status().message(), HasSubstr("--tls_client_ca_file needs --tls_cert_file"));
}

TEST_F(TlsFilesTest, NamesTheFileThatCannotBeRead) {
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

TEST_F(TlsFilesTest, NamesAFileOfTheWrongKind) {
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

TEST_F(TlsFilesTest, AcceptsATraditionalEcKeyAfterItsParameters) {
  const std::string key = testing::MakeTempDir("ec") + "/server.key";
  const std::string command =
      absl::StrCat("openssl ecparam -name prime256v1 > ", key, " && openssl ec -in ",
                   File("server.key"), " >> ", key, " 2>/dev/null");
  ASSERT_EQ(std::system(command.c_str()), 0);
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = key});
  EXPECT_TRUE(summary.ok()) << summary.status();
}

TEST_F(TlsFilesTest, RefusesAKeyOfAnotherCertificate) {
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = File("other-server.key")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      summary.status().message(),
      AllOf(HasSubstr("other-server.key"), HasSubstr("does not belong"), HasSubstr("server.crt")));
}

TEST_F(TlsFilesTest, RefusesAnEncryptedKeyWithoutPrompting) {
  const std::string encrypted = testing::MakeTempDir("encrypted") + "/server.key";
  const std::string command = absl::StrCat("openssl pkey -in ", File("server.key"),
                                           " -aes256 -passout pass:secret -out ", encrypted);
  ASSERT_EQ(std::system(command.c_str()), 0);
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = File("server.crt"), .key_file = encrypted});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(), HasSubstr("encrypted key is not supported"));
}

TEST_F(TlsFilesTest, RefusesAChainCutShort) {
  // The server's certificate, then half of the CA's: the second certificate does not parse.
  const std::string ca = testing::ReadFile(File("ca.crt"));
  const std::string chain = testing::MakeTempDir("cut") + "/chain.crt";
  testing::WriteFile(chain, testing::ReadFile(File("server.crt")) + ca.substr(0, ca.size() / 2));
  absl::StatusOr<TlsSummary> summary =
      CheckTlsFiles({.cert_file = chain, .key_file = File("server.key")});
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_cert_file"), HasSubstr("certificate 2 of 2 does not parse")));

  TlsOptions tls = ServerTls();
  tls.client_ca_file = testing::MakeTempDir("cut-ca") + "/ca.crt";
  testing::WriteFile(tls.client_ca_file, ca.substr(0, ca.size() - 40));
  summary = CheckTlsFiles(tls);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_client_ca_file"), HasSubstr("certificate 1 of 1")));
}

TEST_F(TlsFilesTest, RefusesWhatIsNotARegularFileOrTooLarge) {
  const std::string dir = testing::MakeTempDir("special");
  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  TlsOptions tls = ServerTls();
  tls.key_file = fifo;  // opening it must not wait for a writer
  absl::StatusOr<TlsSummary> summary = CheckTlsFiles(tls);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_key_file"), HasSubstr("is not a file")));

  tls = ServerTls();
  tls.client_ca_file = dir + "/large.crt";
  testing::WriteFile(tls.client_ca_file, std::string(kMaxTlsFileBytes + 1, '#'));
  summary = CheckTlsFiles(tls);
  EXPECT_THAT(summary.status().message(),
              AllOf(HasSubstr("--tls_client_ca_file"), HasSubstr("bytes; at most")));
}

TEST_F(TlsFilesTest, ReloadIntervalIsWholeSeconds) {
  TlsOptions tls = ServerTls();
  tls.reload_interval = absl::Milliseconds(1500);
  EXPECT_THAT(CheckTlsFlags(tls).message(),
              HasSubstr("--tls_reload_seconds must be a whole number"));
  tls.reload_interval = absl::ZeroDuration();
  EXPECT_FALSE(CheckTlsFlags(tls).ok());
  tls.reload_interval = absl::Seconds(2);
  EXPECT_TRUE(CheckTlsFlags(tls).ok());
}

}  // namespace
}  // namespace rosetta::server
