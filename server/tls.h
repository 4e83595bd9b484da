// TLS for rosettad's gRPC port, from the files of TlsOptions (server/tls_files.h), re-read while
// serving so that rotated certificates (cert-manager, a renewed Kubernetes Secret) take effect
// without a restart.
//
//   absl::StatusOr<std::unique_ptr<TlsCertificates>> tls = TlsCertificates::Start(options);
//   builder.AddListeningPort(address, (*tls)->credentials(), &port);
//
// gRPC re-reads certificate files on its own but takes whatever it finds: a half-written or
// mismatched update would fail every handshake until fixed. So gRPC watches private copies, and
// TlsCertificates copies the operator's files there only once they pass CheckTlsPem; a bad
// update is logged and the last good certificate stays in use.
#ifndef ROSETTA_SERVER_TLS_H_
#define ROSETTA_SERVER_TLS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/security/server_credentials.h"
#include "server/tls_files.h"

namespace rosetta::server {

// The TLS files in use, watched for updates. Thread-safe.
class TlsCertificates {
 public:
  // Checks the files (CheckTlsFiles), copies them into a new private directory
  // (options.scratch_dir/rosettad-tls-XXXXXX, 0700, the key 0600) and starts watching them.
  // Removes the private directories that processes which died before removing theirs left in
  // scratch_dir. REQUIRES: options.enabled().
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
  // Whether the files as they are now are not in use (unreadable, failing the checks, or their
  // private copies cannot be written), so that an older certificate is still served.
  bool files_refused() const;
  // The private directory (for tests).
  const std::string& private_dir() const { return dir_; }

 private:
  TlsCertificates(const TlsOptions& options, std::string dir, int lock_fd);
  // Writes `pem` as a new generation of the private copies and points `current` at it.
  absl::Status Install(const TlsPem& pem) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Watch();
  void CheckForUpdate();

  const TlsOptions options_;
  const std::string dir_;  // private: dir_/current -> dir_/<generation>/{tls.crt,tls.key,ca.crt}
  const int lock_fd_;      // dir_/lock, locked while this process lives (see Start)
  mutable absl::Mutex mu_;
  TlsPem installed_ ABSL_GUARDED_BY(mu_);
  TlsPem refused_ ABSL_GUARDED_BY(mu_);  // the last content refused, so that it is logged once
  std::string read_error_ ABSL_GUARDED_BY(mu_);        // likewise for a file that cannot be read
  bool install_failing_ ABSL_GUARDED_BY(mu_) = false;  // the last Install of new files failed
  TlsSummary summary_ ABSL_GUARDED_BY(mu_);
  int generation_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t refused_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_TLS_H_
