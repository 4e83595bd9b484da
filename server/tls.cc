#include "server/tls.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "server/log.h"

namespace rosetta::server {

namespace {

constexpr char kDirPrefix[] = "rosettad-tls-";

std::string FormatExpiry(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", time, absl::UTCTimeZone());
}

// Creates `path` readable by this user only and writes `contents` to disk.
absl::Status WritePrivateFile(const std::string& path, const std::string& contents) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", path));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  const bool ok = written == contents.size() && fsync(fd) == 0;
  close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// Removes the private directories in `scratch` whose process is gone: their lock file is not
// locked. A directory without a lock file may be another process's, between its mkdtemp and its
// lock: only one older than a minute is removed.
void RemoveAbandonedDirectories(const std::string& scratch) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(scratch, error)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, kDirPrefix) || !entry.is_directory(error)) continue;
    const std::string lock = entry.path().string() + "/lock";
    const int fd = open(lock.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    bool abandoned = false;
    if (fd >= 0) {
      abandoned = flock(fd, LOCK_EX | LOCK_NB) == 0;
      close(fd);
    } else {
      struct stat info = {};
      abandoned = stat(entry.path().c_str(), &info) == 0 && info.st_mtime < time(nullptr) - 60;
    }
    if (abandoned) std::filesystem::remove_all(entry.path(), error);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsCertificates>> TlsCertificates::Start(const TlsOptions& options) {
  if (absl::Status s = CheckTlsFlags(options); !s.ok()) return s;
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options);
  if (!pem.ok()) return pem.status();
  absl::StatusOr<TlsSummary> summary = CheckTlsPem(options, *pem);
  if (!summary.ok()) return summary.status();

  std::string scratch = options.scratch_dir;
  if (scratch.empty()) {
    std::error_code error;
    scratch = std::filesystem::temp_directory_path(error).string();
    if (error) scratch = "/tmp";
  }
  RemoveAbandonedDirectories(scratch);
  std::string dir = absl::StrCat(scratch, "/", kDirPrefix, "XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("TLS: cannot create a private directory for the certificates in use in ",
                     scratch, ": set TMPDIR to a writable directory"));
  }
  // Held until this object goes: a process that dies leaves an unlocked file, and the next
  // Start in the same scratch directory removes what it left.
  const int lock_fd = open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0 || flock(lock_fd, LOCK_EX) != 0) {
    if (lock_fd >= 0) close(lock_fd);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
    return absl::FailedPreconditionError(absl::StrCat("TLS: cannot lock ", dir, "/lock"));
  }
  std::unique_ptr<TlsCertificates> certificates(new TlsCertificates(options, dir, lock_fd));
  {
    absl::MutexLock lock(&certificates->mu_);
    if (absl::Status s = certificates->Install(*pem); !s.ok()) return s;
    certificates->summary_ = *summary;
  }
  certificates->watcher_ = std::thread([raw = certificates.get()] { raw->Watch(); });
  return certificates;
}

TlsCertificates::TlsCertificates(const TlsOptions& options, std::string dir, int lock_fd)
    : options_(options), dir_(std::move(dir)), lock_fd_(lock_fd) {}

TlsCertificates::~TlsCertificates() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
  close(lock_fd_);
}

absl::Status TlsCertificates::Install(const TlsPem& pem) {
  const std::string name = absl::StrCat(generation_ + 1);
  const std::string generation = absl::StrCat(dir_, "/", name);
  std::error_code error;
  std::filesystem::remove_all(generation, error);  // what a failed attempt left
  if (mkdir(generation.c_str(), 0700) != 0) {
    return absl::InternalError(absl::StrCat("cannot create ", generation));
  }
  if (absl::Status s = WritePrivateFile(generation + "/tls.crt", pem.chain); !s.ok()) return s;
  if (absl::Status s = WritePrivateFile(generation + "/tls.key", pem.key); !s.ok()) return s;
  if (!options_.client_ca_file.empty()) {
    if (absl::Status s = WritePrivateFile(generation + "/ca.crt", pem.client_ca); !s.ok()) return s;
  }
  // gRPC reads key and certificate through `current`, swapped in one rename. It tells a swap
  // between its reads from a steady pair by the files' modification times, in seconds: the
  // watcher installs at most once per reload interval, a whole number of seconds.
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
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.reload_interval)) return;
    }
    CheckForUpdate();
  }
}

void TlsCertificates::CheckForUpdate() {
  // Read without the lock: a slow file system must not hold up summary() and the counters (the
  // destructor still waits for the read to end).
  absl::StatusOr<TlsPem> pem = ReadTlsPem(options_);
  absl::MutexLock lock(&mu_);
  if (stop_) return;
  // Formatted only when something is refused, not at every interval.
  auto kept = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return absl::StrCat("; still using the certificate ", summary_.subject, " issued by ",
                        summary_.issuer, ", valid until ", FormatExpiry(summary_.not_after));
  };
  if (!pem.ok()) {
    if (pem.status().message() != read_error_) {
      read_error_ = std::string(pem.status().message());
      ++refused_count_;
      Log("error: TLS files changed: ", pem.status().message(), kept());
    }
    return;
  }
  read_error_.clear();
  std::error_code error;
  const bool copies_missing = !std::filesystem::exists(dir_ + "/current/tls.key", error);
  const bool restore = *pem == installed_;  // and the private copies are gone
  if (restore) {                            // the files went back to what is in use
    refused_ = TlsPem();
    if (!copies_missing) install_failing_ = false;
  }
  if ((restore && !copies_missing) || *pem == refused_) return;
  absl::StatusOr<TlsSummary> summary = CheckTlsPem(options_, *pem);
  if (!summary.ok()) {
    refused_ = *pem;
    ++refused_count_;
    Log("error: TLS files changed: ", summary.status().message(), kept());
    return;
  }
  if (absl::Status s = Install(*pem); !s.ok()) {
    // Not remembered as refused: the next interval tries again.
    install_failing_ = true;
    Log("error: TLS: cannot take the certificate into use: ", s.message(), kept());
    return;
  }
  install_failing_ = false;
  refused_ = TlsPem();
  if (restore) {
    Log("TLS: the private copies of the certificate in use were gone from ", dir_,
        "; written again");
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
  const auto interval = static_cast<unsigned int>(absl::ToInt64Seconds(options_.reload_interval));
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

bool TlsCertificates::files_refused() const {
  absl::MutexLock lock(&mu_);
  return !read_error_.empty() || !(refused_ == TlsPem()) || install_failing_;
}

int64_t TlsCertificates::updates_refused() const {
  absl::MutexLock lock(&mu_);
  return refused_count_;
}

}  // namespace rosetta::server
