#include "server/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <time.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/small_file.h"

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

absl::Status Invalid(const char* flag, const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, ": ", what));
}

Bio MemoryBio(const std::string& data) {
  return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

int CountOf(const std::string& text, const std::string& needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// Every PEM certificate in `pem`, in order; other PEM blocks (a key in the same file) are
// skipped. An error when a certificate block does not parse: a file cut short or damaged.
absl::StatusOr<std::vector<Certificate>> ReadCertificates(const char* flag, const std::string& path,
                                                          const std::string& pem) {
  std::vector<Certificate> certificates;
  Bio bio = MemoryBio(pem);
  while (X509* x509 = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(x509);
  }
  ERR_clear_error();  // the end of the data reads as an error
  const int blocks = CountOf(pem, "-----BEGIN CERTIFICATE-----") +
                     CountOf(pem, "-----BEGIN X509 CERTIFICATE-----");
  if (blocks == 0) return Invalid(flag, path, "no PEM certificate in it");
  if (static_cast<int>(certificates.size()) < blocks) {
    return Invalid(flag, path,
                   absl::StrCat("certificate ", certificates.size() + 1, " of ", blocks,
                                " does not parse (is the file cut short?)"));
  }
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

}  // namespace

absl::Status CheckTlsFlags(const TlsOptions& options) {
  if (options.reload_interval < absl::Seconds(1) ||
      options.reload_interval != absl::Seconds(absl::ToInt64Seconds(options.reload_interval))) {
    // gRPC re-reads in whole seconds and tells an update from a torn read by modification times
    // in seconds: the private copies must change at most once a second.
    return absl::InvalidArgumentError("--tls_reload_seconds must be a whole number >= 1");
  }
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

absl::StatusOr<TlsPem> ReadTlsPem(const TlsOptions& options) {
  TlsPem pem;
  absl::StatusOr<std::string> chain =
      ReadSmallFile("tls_cert_file", options.cert_file, kMaxTlsFileBytes);
  if (!chain.ok()) return chain.status();
  pem.chain = std::move(*chain);
  absl::StatusOr<std::string> key =
      ReadSmallFile("tls_key_file", options.key_file, kMaxTlsFileBytes);
  if (!key.ok()) return key.status();
  pem.key = std::move(*key);
  if (!options.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca =
        ReadSmallFile("tls_client_ca_file", options.client_ca_file, kMaxTlsFileBytes);
    if (!ca.ok()) return ca.status();
    pem.client_ca = std::move(*ca);
  }
  return pem;
}

absl::StatusOr<TlsSummary> CheckTlsPem(const TlsOptions& options, const TlsPem& pem) {
  TlsSummary summary;
  absl::StatusOr<std::vector<Certificate>> chain =
      ReadCertificates("tls_cert_file", options.cert_file, pem.chain);
  if (!chain.ok()) return chain.status();
  Bio key_bio = MemoryBio(pem.key);
  PrivateKey key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return Invalid("tls_key_file", options.key_file,
                   "no PEM private key in it (an encrypted key is not supported)");
  }
  X509* leaf = chain->front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return Invalid(
        "tls_key_file", options.key_file,
        absl::StrCat("this key does not belong to the first certificate of ", options.cert_file));
  }
  summary.subject = NameText(X509_get_subject_name(leaf));
  summary.issuer = NameText(X509_get_issuer_name(leaf));
  summary.not_after = NotAfter(leaf);
  summary.chain_not_after = summary.not_after;
  for (const Certificate& certificate : *chain) {
    summary.chain_not_after = std::min(summary.chain_not_after, NotAfter(certificate.get()));
  }
  summary.chain_certificates = static_cast<int>(chain->size());
  if (!options.client_ca_file.empty()) {
    absl::StatusOr<std::vector<Certificate>> cas =
        ReadCertificates("tls_client_ca_file", options.client_ca_file, pem.client_ca);
    if (!cas.ok()) return cas.status();
    summary.client_ca_certificates = static_cast<int>(cas->size());
  }
  return summary;
}

absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsOptions& options) {
  if (absl::Status s = CheckTlsFlags(options); !s.ok()) return s;
  if (!options.enabled()) return TlsSummary{};
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options);
  if (!pem.ok()) return pem.status();
  return CheckTlsPem(options, *pem);
}

}  // namespace rosetta::server
