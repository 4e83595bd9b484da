#include "server/api_key_file.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/log.h"
#include "server/small_file.h"

namespace rosetta::server {

absl::StatusOr<std::unique_ptr<ApiKeyFile>> ApiKeyFile::Start(const std::string& path,
                                                              absl::Duration reload_interval) {
  absl::StatusOr<std::string> contents =
      ReadSmallFile("api_keys_file", path, ApiKeys::kMaxFileBytes);
  if (!contents.ok()) return contents.status();
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(path, *contents);
  if (!keys.ok()) return keys.status();
  std::unique_ptr<ApiKeyFile> file(
      new ApiKeyFile(path, reload_interval, *std::move(contents), *std::move(keys)));
  if (reload_interval > absl::ZeroDuration()) {
    file->watcher_ = std::thread([raw = file.get()] { raw->Watch(); });
  }
  return file;
}

ApiKeyFile::ApiKeyFile(std::string path, absl::Duration reload_interval, std::string contents,
                       ApiKeys keys)
    : path_(std::move(path)),
      reload_interval_(reload_interval),
      keys_(std::make_shared<const ApiKeys>(std::move(keys))),
      contents_(std::move(contents)) {}

ApiKeyFile::~ApiKeyFile() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (watcher_.joinable()) watcher_.join();
}

absl::Status ApiKeyFile::Authenticate(std::optional<absl::string_view> authorization) const {
  std::shared_ptr<const ApiKeys> keys;
  {
    absl::MutexLock lock(&mu_);
    keys = keys_;
  }
  return keys->Authenticate(authorization);
}

void ApiKeyFile::Watch() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), reload_interval_)) return;
    }
    CheckForUpdate();
  }
}

void ApiKeyFile::CheckForUpdate() {
  // Read and parse without the lock: calls authenticate meanwhile.
  absl::StatusOr<std::string> contents =
      ReadSmallFile("api_keys_file", path_, ApiKeys::kMaxFileBytes);
  {
    // Most intervals find the file as it was: nothing to settle, parse or log.
    absl::MutexLock lock(&mu_);
    if (contents.ok() && *contents == contents_) {
      refused_.reset();  // back to what is in use
      return;
    }
    const std::string seen = contents.ok() ? *contents : std::string(contents.status().message());
    if (seen == refused_) return;
  }
  if (contents.ok()) {
    // A file written in place (not renamed into place) may be caught half-written, and a cut
    // line can still look like a key: take only contents that stay the same a moment later.
    absl::SleepFor(kSettleTime);
    absl::StatusOr<std::string> again =
        ReadSmallFile("api_keys_file", path_, ApiKeys::kMaxFileBytes);
    if (!again.ok() || *again != *contents) return;  // changing: the next interval looks again
  }
  absl::StatusOr<ApiKeys> keys =
      contents.ok() ? ApiKeys::Parse(path_, *contents) : absl::StatusOr<ApiKeys>(contents.status());
  std::string message;  // logged after the lock is released
  {
    absl::MutexLock lock(&mu_);
    if (!keys.ok()) {
      // Remembered, so that the next intervals pass it over (above) instead of logging it again.
      refused_ = contents.ok() ? *contents : std::string(keys.status().message());
      ++refused_count_;
      message = absl::StrCat("error: API keys file changed: ", keys.status().message(),
                             "; still using the ", keys_->size(), " keys read before");
    } else {
      message = absl::StrCat("API keys: ", keys->size(), " keys from ", path_, " (", keys_->size(),
                             " before)");
      keys_ = std::make_shared<const ApiKeys>(*std::move(keys));
      contents_ = *std::move(contents);
      refused_.reset();
      ++accepted_;
    }
  }
  Log(message);
}

bool ApiKeyFile::file_refused() const {
  absl::MutexLock lock(&mu_);
  return refused_.has_value();
}

size_t ApiKeyFile::size() const {
  absl::MutexLock lock(&mu_);
  return keys_->size();
}

int64_t ApiKeyFile::updates_accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

int64_t ApiKeyFile::updates_refused() const {
  absl::MutexLock lock(&mu_);
  return refused_count_;
}

}  // namespace rosetta::server
