// The API keys file in use, re-read while serving so that keys can be added and revoked without a
// restart (a Kubernetes Secret update). An update that fails ApiKeys::Parse (an emptied file, a
// short key) is logged and the keys read before stay in use.
//
//   absl::StatusOr<std::unique_ptr<ApiKeyFile>> keys = ApiKeyFile::Start(path, absl::Seconds(60));
//   absl::Status status = (*keys)->Authenticate(authorization);
//
// Thread-safe.
#ifndef ROSETTA_SERVER_API_KEY_FILE_H_
#define ROSETTA_SERVER_API_KEY_FILE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api_keys.h"

namespace rosetta::server {

class ApiKeyFile {
 public:
  // Reads the keys (ApiKeys::Load's errors) and, unless `reload_interval` is zero, re-reads the
  // file that often.
  static absl::StatusOr<std::unique_ptr<ApiKeyFile>> Start(const std::string& path,
                                                           absl::Duration reload_interval);
  ApiKeyFile(const ApiKeyFile&) = delete;
  ApiKeyFile& operator=(const ApiKeyFile&) = delete;
  ~ApiKeyFile();  // stops watching

  // ApiKeys::Authenticate with the keys in use.
  absl::Status Authenticate(std::optional<absl::string_view> authorization) const;
  size_t size() const;
  // Changes of the file taken into use, and those refused (a refused version is counted and
  // logged once while the file stays as it is).
  int64_t updates_accepted() const;
  int64_t updates_refused() const;
  // Whether the file as it is now is refused (unreadable or failing the checks), so that the
  // keys read before are still in use: keys removed from it may still be accepted.
  bool file_refused() const;

  // How long a changed file must stay the same before it is read as an update.
  static constexpr absl::Duration kSettleTime = absl::Milliseconds(200);

 private:
  ApiKeyFile(std::string path, absl::Duration reload_interval, std::string contents, ApiKeys keys);
  void Watch();
  void CheckForUpdate();

  const std::string path_;
  const absl::Duration reload_interval_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ApiKeys> keys_ ABSL_GUARDED_BY(mu_);
  std::string contents_ ABSL_GUARDED_BY(mu_);  // of the file the keys in use came from
  // The last refused contents, or read error, so that it is counted and logged once.
  std::optional<std::string> refused_ ABSL_GUARDED_BY(mu_);
  int64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t refused_count_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watcher_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_API_KEY_FILE_H_
