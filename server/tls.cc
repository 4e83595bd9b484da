#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <time.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/log.h"

namespace rosetta::server {

namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;
using Certificate = std::unique_ptr<X509, X509Deleter>;
using PrivateKey = std::unique_ptr<EVP_PKEY, KeyDeleter>;

absl::StatusOr<std::string> ReadFile(const char* flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::Status Invalid(const char* flag, const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, ": ", what));
}

Bio MemoryBio(const std::string& data) {
  return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// Every PEM certificate in `pem`, in order; other PEM blocks (a key in the same file) are skipped.
std::vector<Certificate> ReadCertificates(const std::string& pem) {
  std::vector<Certificate> certificates;
  Bio bio = MemoryBio(pem);
  while (X509* x509 = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(x509);
  }
  ERR_clear_error();  // the end of the data reads as an error
  return certificates;
}

// A passphrase callback that supplies none: an encrypted key fails instead of prompting on a
// terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

std::string NameText(const X509_NAME* name) {
  Bio bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(std::max(size, 0L)));
}

absl::Time NotAfter(X509* certificate) {
  struct tm time = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(certificate), &time) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&time));
}

std::string FormatExpiry(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", time, absl::UTCTimeZone());
}

// Writes `contents` to `path`, failing with a message that names it.
absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<TlsSummary> CheckPem(const TlsOptions& options, const TlsPem& pem) {
  TlsSummary summary;
  std::vector<Certificate> chain = ReadCertificates(pem.chain);
  if (chain.empty()) return Invalid("tls_cert_file", options.cert_file, "no PEM certificate in it");
  Bio key_bio = MemoryBio(pem.key);
  PrivateKey key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return Invalid("tls_key_file", options.key_file,
                   "no PEM private key in it (an encrypted key is not supported)");
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return Invalid(
        "tls_key_file", options.key_file,
        absl::StrCat("this key does not belong to the first certificate of ", options.cert_file));
  }
  summary.subject = NameText(X509_get_subject_name(chain.front().get()));
  summary.issuer = NameText(X509_get_issuer_name(chain.front().get()));
  summary.not_after = NotAfter(chain.front().get());
  summary.chain_certificates = static_cast<int>(chain.size());
  if (!options.client_ca_file.empty()) {
    summary.client_ca_certificates = static_cast<int>(ReadCertificates(pem.client_ca).size());
    if (summary.client_ca_certificates == 0) {
      return Invalid("tls_client_ca_file", options.client_ca_file, "no PEM certificate in it");
    }
  }
  return summary;
}

absl::StatusOr<TlsPem> ReadTlsPem(const TlsOptions& options) {
  TlsPem pem;
  absl::StatusOr<std::string> chain = ReadFile("tls_cert_file", options.cert_file);
  if (!chain.ok()) return chain.status();
  pem.chain = std::move(*chain);
  absl::StatusOr<std::string> key = ReadFile("tls_key_file", options.key_file);
  if (!key.ok()) return key.status();
  pem.key = std::move(*key);
  if (!options.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile("tls_client_ca_file", options.client_ca_file);
    if (!ca.ok()) return ca.status();
    pem.client_ca = std::move(*ca);
  }
  return pem;
}

}  // namespace

absl::Status CheckTlsFlags(const TlsOptions& options) {
  if (options.enabled()) {
    if (options.key_file.empty()) {
      return absl::InvalidArgumentError("--tls_cert_file needs --tls_key_file");
    }
    return absl::OkStatus();
  }
  if (!options.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_key_file needs --tls_cert_file");
  }
  if (!options.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file (mutual TLS is TLS)");
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsOptions& options) {
  if (absl::Status s = CheckTlsFlags(options); !s.ok()) return s;
  if (!options.enabled()) return TlsSummary{};
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options);
  if (!pem.ok()) return pem.status();
  return CheckPem(options, *pem);
}

absl::StatusOr<std::unique_ptr<TlsCertificates>> TlsCertificates::Start(const TlsOptions& options) {
  if (absl::Status s = CheckTlsFlags(options); !s.ok()) return s;
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options);
  if (!pem.ok()) return pem.status();
  absl::StatusOr<TlsSummary> summary = CheckPem(options, *pem);
  if (!summary.ok()) return summary.status();

  std::error_code error;
  const std::filesystem::path temp = std::filesystem::temp_directory_path(error);
  std::string pattern = ((error ? std::filesystem::path("/tmp") : temp) / "rosettad-tls-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("TLS: cannot create a private directory for the certificates in use (",
                     pattern, "): set TMPDIR to a writable directory"));
  }
  std::unique_ptr<TlsCertificates> certificates(new TlsCertificates(options, pattern));
  {
    absl::MutexLock lock(&certificates->mu_);
    if (absl::Status s = certificates->Install(*pem); !s.ok()) return s;
    certificates->summary_ = *summary;
  }
  certificates->watcher_ = std::thread([raw = certificates.get()] { raw->Watch(); });
  return certificates;
}

TlsCertificates::TlsCertificates(const TlsOptions& options, std::string dir)
    : options_(options), dir_(std::move(dir)) {}

TlsCertificates::~TlsCertificates() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::Status TlsCertificates::Install(const TlsPem& pem) {
  const std::string name = absl::StrCat(generation_ + 1);
  const std::string generation = absl::StrCat(dir_, "/", name);
  std::error_code error;
  std::filesystem::create_directory(generation, error);
  if (error) return absl::InternalError(absl::StrCat("cannot create ", generation));
  if (absl::Status s = WriteFile(generation + "/tls.crt", pem.chain); !s.ok()) return s;
  if (absl::Status s = WriteFile(generation + "/tls.key", pem.key); !s.ok()) return s;
  if (!options_.client_ca_file.empty()) {
    if (absl::Status s = WriteFile(generation + "/ca.crt", pem.client_ca); !s.ok()) return s;
  }
  // Key and certificate change together: gRPC reads them through `current`, swapped in one
  // rename (and it re-reads when a file changed while it read).
  const std::string link = dir_ + "/current";
  std::filesystem::remove(link + ".new", error);
  std::filesystem::create_directory_symlink(name, link + ".new", error);
  if (!error) std::filesystem::rename(link + ".new", link, error);
  if (error) return absl::InternalError(absl::StrCat("cannot point ", link, " at ", generation));
  // The generation before the previous one: gRPC may still be reading the previous.
  if (generation_ >= 2) {
    std::filesystem::remove_all(absl::StrCat(dir_, "/", generation_ - 1), error);
  }
  ++generation_;
  installed_ = pem;
  return absl::OkStatus();
}

void TlsCertificates::Watch() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.reload_interval)) {
    CheckForUpdate();
  }
}

void TlsCertificates::CheckForUpdate() {
  const std::string kept = absl::StrCat("; still using the certificate ", summary_.subject,
                                        " valid until ", FormatExpiry(summary_.not_after));
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options_);
  if (!pem.ok()) {
    if (pem.status().message() != read_error_) {
      read_error_ = std::string(pem.status().message());
      ++refused_count_;
      Log("error: TLS files changed: ", pem.status().message(), kept);
    }
    return;
  }
  read_error_.clear();
  if (*pem == installed_ || *pem == refused_) return;
  absl::StatusOr<TlsSummary> summary = CheckPem(options_, *pem);
  absl::Status status = summary.ok() ? Install(*pem) : summary.status();
  if (!status.ok()) {
    refused_ = *pem;
    ++refused_count_;
    Log("error: TLS files changed: ", status.message(), kept);
    return;
  }
  summary_ = *summary;
  ++accepted_;
  Log("TLS: new certificate ", summary_.subject, " issued by ", summary_.issuer, ", valid until ",
      FormatExpiry(summary_.not_after), " (", summary_.chain_certificates, " in the chain",
      options_.client_ca_file.empty()
          ? std::string()
          : absl::StrCat(", ", summary_.client_ca_certificates, " client CA certificates"),
      ")");
}

std::shared_ptr<grpc::ServerCredentials> TlsCertificates::credentials() const {
  const auto interval = static_cast<unsigned int>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options_.reload_interval)));
  const std::string current = dir_ + "/current/";
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      current + "tls.key", current + "tls.crt",
      options_.client_ca_file.empty() ? std::string() : current + "ca.crt", interval);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options_.client_ca_file.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

TlsSummary TlsCertificates::summary() const {
  absl::MutexLock lock(&mu_);
  return summary_;
}

int64_t TlsCertificates::updates_accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

int64_t TlsCertificates::updates_refused() const {
  absl::MutexLock lock(&mu_);
  return refused_count_;
}

}  // namespace rosetta::server
