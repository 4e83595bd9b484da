// The files of rosettad's TLS configuration: which flags go together, and reading and checking the
// PEM certificate chain, private key and client CA certificates (OpenSSL), with errors that name
// the flag and the file. TlsCertificates (server/tls.h) serves what passes. Thread-safe: no state.
#ifndef ROSETTA_SERVER_TLS_FILES_H_
#define ROSETTA_SERVER_TLS_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace rosetta::server {

struct TlsOptions {
  std::string cert_file{};       // PEM certificate chain, the server's own first; empty: no TLS
  std::string key_file{};        // PEM private key of the first certificate
  std::string client_ca_file{};  // PEM CA certificates; set: clients must present a certificate
                                 // that chains to one of them (mutual TLS)
  // How often the files are re-read (whole seconds, at least 1); a rotation takes effect within
  // about twice this time.
  absl::Duration reload_interval = absl::Seconds(60);
  // Where TlsCertificates keeps its private copies; empty: $TMPDIR, else /tmp.
  std::string scratch_dir{};

  bool enabled() const { return !cert_file.empty(); }
};

// The contents of the three files (client_ca empty without one).
struct TlsPem {
  std::string chain, key, client_ca;
  bool operator==(const TlsPem&) const = default;
};

// What start-up and each accepted update log about the certificate in use.
struct TlsSummary {
  std::string subject;             // the server certificate's subject ("CN=rosetta,O=...")
  std::string issuer;              // and its issuer
  absl::Time not_after;            // when it expires
  absl::Time chain_not_after;      // when the first certificate of the chain expires (the
                                   // server's or an intermediate it sends)
  int chain_certificates = 0;      // certificates in cert_file
  int client_ca_certificates = 0;  // certificates in client_ca_file (0 without mutual TLS)
};

// The largest file accepted: PEM bundles are kilobytes.
inline constexpr size_t kMaxTlsFileBytes = 1 << 20;

// Checks that the flags go together (a key with a certificate, a client CA only with both) and
// that the reload interval is whole seconds, at least 1.
absl::Status CheckTlsFlags(const TlsOptions& options);

// Reads the files: each must be a regular file of at most kMaxTlsFileBytes. NotFound (naming
// the flag and the file) when one cannot be read, InvalidArgument when it is not a regular file
// or too large. REQUIRES: options.enabled().
absl::StatusOr<TlsPem> ReadTlsPem(const TlsOptions& options);

// Checks the contents: every PEM certificate block parses (a file cut short fails), the key
// parses and belongs to the first certificate, the client CA file holds certificates. Errors
// name the flag and the file. An expired certificate is not an error (a rotation may be on its
// way): the caller sees not_after.
absl::StatusOr<TlsSummary> CheckTlsPem(const TlsOptions& options, const TlsPem& pem);

// CheckTlsFlags, then, with a certificate, ReadTlsPem and CheckTlsPem.
absl::StatusOr<TlsSummary> CheckTlsFiles(const TlsOptions& options);

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_TLS_FILES_H_
