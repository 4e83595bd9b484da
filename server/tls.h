// TLS for rosettad's gRPC port: the server's certificate and key (and, for mutual TLS, the CA that
// client certificates must chain to) as PEM files, checked at start-up and re-read while serving so
// that rotated certificates (cert-manager, a renewed Kubernetes Secret) take effect without a
// restart.
//
//   absl::StatusOr<std::unique_ptr<TlsCertificates>> tls = TlsCertificates::Start(options);
//   builder.AddListeningPort(address, (*tls)->credentials(), &port);
//
// gRPC re-reads certificate files on its own but takes whatever it finds: a half-written or
// mismatched update would fail every handshake until fixed. So gRPC watches private copies, and
// TlsCertificates copies the operator's files there only once they pass the checks; a bad update
// is logged and the last good certificate stays in use.
#ifndef ROSETTA_SERVER_TLS_H_
#define ROSETTA_SERVER_TLS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"

namespace rosetta::server {

struct TlsOptions {
  std::string cert_file{};       // PEM certificate chain, the server's own first; empty: no TLS
  std::string key_file{};        // PEM private key of the first certificate
  std::string client_ca_file{};  // PEM CA certificates; set: clients must present a certificate
                                 // that chains to one of them (mutual TLS)
  // How often the files are re-read; a rotation takes effect within about twice this time.
  absl::Duration reload_interval = absl::Seconds(60);

  bool enabled() const { return !cert_file.empty(); }
};

// What start-up and each accepted update log about the certificate in use.
struct TlsSummary {
  std::string subject;             // the server certificate's subject ("CN=rosetta,O=...")
  std::string issuer;              // and its issuer
  absl::Time not_after;            // when it expires
  int chain_certificates = 0;      // certificates in cert_file
  int client_ca_certificates = 0;  // certificates in client_ca_file (0 without mutual TLS)
};

// The contents of the three files.
struct TlsPem {
  std::string chain, key, client_ca;
  bool operator==(const TlsPem&) const = default;
};

// Checks that the flags go together: a key with a certificate, a client CA only with both.
absl::Status CheckTlsFlags(const TlsOptions& options);

// Reads the files and checks them (CheckTlsFlags first): each exists and is PEM of the right kind,
// the key belongs to the first certificate. Errors name the flag and the file (InvalidArgument;
// NotFound for a file that cannot be read). An expired certificate is not an error (a rotation may
// be on its way): the caller sees not_after.
absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsOptions& options);

// The TLS files in use, watched for updates. Thread-safe.
class TlsCertificates {
 public:
  // Checks the files (CheckTlsFiles), copies them into a new private directory under $TMPDIR (or
  // /tmp) and starts watching them. REQUIRES: options.enabled().
  static absl::StatusOr<std::unique_ptr<TlsCertificates>> Start(const TlsOptions& options);
  TlsCertificates(const TlsCertificates&) = delete;
  TlsCertificates& operator=(const TlsCertificates&) = delete;
  // Stops watching and removes the private copies. The server using credentials() must have
  // stopped.
  ~TlsCertificates();

  // TLS credentials over the private copies (gRPC re-reads them every reload_interval); client
  // certificates requested, required and verified when client_ca_file is set.
  std::shared_ptr<grpc::ServerCredentials> credentials() const;
  TlsSummary summary() const;
  // Updates of the files taken into use, and those refused (each distinct content counted once).
  int64_t updates_accepted() const;
  int64_t updates_refused() const;

 private:
  TlsCertificates(const TlsOptions& options, std::string dir);
  // Writes `pem` as a new generation of the private copies and points `current` at it.
  absl::Status Install(const TlsPem& pem) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Watch();
  void CheckForUpdate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TlsOptions options_;
  const std::string dir_;  // private: dir_/current -> dir_/<generation>/{tls.crt,tls.key,ca.crt}
  mutable absl::Mutex mu_;
  TlsPem installed_ ABSL_GUARDED_BY(mu_);
  TlsPem refused_ ABSL_GUARDED_BY(mu_);  // the last content refused, so that it is logged once
  std::string read_error_ ABSL_GUARDED_BY(mu_);  // likewise for a file that cannot be read
  TlsSummary summary_ ABSL_GUARDED_BY(mu_);
  int generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t refused_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_TLS_H_
