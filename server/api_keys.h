// API keys: with a keys file, every call of the Rosetta service must carry the metadata
// `authorization: Bearer KEY` with one of its keys (as Hugging Face TEI's --api-key and vLLM's
// do). Health and reflection stay open, for probes and generic tools.
//
//   absl::StatusOr<ApiKeys> keys = ApiKeys::Load("/run/secrets/rosetta-keys");
//   absl::Status status = keys->Authenticate(authorization_metadata);  // UNAUTHENTICATED or OK
//
// Immutable after Load: thread-safe.
#ifndef ROSETTA_SERVER_API_KEYS_H_
#define ROSETTA_SERVER_API_KEYS_H_

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta::server {

class ApiKeys {
 public:
  // The metadata key clients send ("authorization": gRPC metadata keys are lower case).
  static constexpr char kMetadataKey[] = "authorization";
  // Keys shorter than this are refused: a key must not be guessable.
  static constexpr size_t kMinLength = 16;

  // Reads the keys: one per line; blank lines and lines starting with '#' are skipped, spaces
  // around a key ignored. Errors name the file and, for a bad key, its line number (never the
  // key): NotFound when it cannot be read, InvalidArgument when it holds no key, a key shorter
  // than kMinLength or one with a character other than printable ASCII without spaces (what
  // gRPC metadata can carry).
  static absl::StatusOr<ApiKeys> Load(const std::string& path);
  // The same from the file's `contents` (`path` only names it in errors).
  static absl::StatusOr<ApiKeys> Parse(const std::string& path, absl::string_view contents);
  // The largest keys file accepted.
  static constexpr size_t kMaxFileBytes = 1 << 20;

  // OK when `authorization` (the metadata's value; nullopt when absent) is "Bearer " and one of
  // the keys; otherwise UNAUTHENTICATED, saying whether the key was missing or wrong. Compares in
  // time that does not depend on how much of a key matches.
  absl::Status Authenticate(std::optional<absl::string_view> authorization) const;

  size_t size() const { return digests_.size(); }

 private:
  using Digest = std::array<unsigned char, 32>;  // SHA-256
  static Digest Hash(absl::string_view key);

  std::vector<Digest> digests_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_API_KEYS_H_
