#include "server/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/small_file.h"

namespace rosetta::server {

absl::StatusOr<ApiKeys> ApiKeys::Load(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadSmallFile("api_keys_file", path, kMaxFileBytes);
  if (!contents.ok()) return contents.status();
  return Parse(path, *contents);
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(const std::string& path, absl::string_view contents) {
  ApiKeys keys;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    ++number;
    const absl::string_view key = absl::StripAsciiWhitespace(line);
    if (key.empty() || key[0] == '#') continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--api_keys_file: ", path, ":", number, ": ", why));
    };
    if (key.size() < kMinLength) {
      return bad(absl::StrCat("the key has ", key.size(), " characters; at least ", kMinLength,
                              " are needed"));
    }
    // What gRPC metadata can carry: printable ASCII; spaces would not survive the stripping.
    for (const char c : key) {
      if (c < 0x21 || c > 0x7e) {
        return bad("the key has a character other than printable ASCII without spaces");
      }
    }
    keys.digests_.push_back(Hash(key));
  }
  if (keys.digests_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api_keys_file: ", path, " holds no key (one per line)"));
  }
  return keys;
}

ApiKeys::Digest ApiKeys::Hash(absl::string_view key) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest.data());
  return digest;
}

absl::Status ApiKeys::Authenticate(std::optional<absl::string_view> authorization) const {
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "this server requires an API key: send the metadata \"authorization: Bearer KEY\"");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  // The scheme is case-insensitive (RFC 9110).
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError(
        "the \"authorization\" metadata must be \"Bearer KEY\" (an API key)");
  }
  // Digests of equal length, compared in constant time, and every key compared: the time says
  // nothing of which key or how much of it matched.
  const Digest digest = Hash(absl::StripLeadingAsciiWhitespace(value.substr(7)));
  bool found = false;
  for (const Digest& known : digests_) {
    found |= CRYPTO_memcmp(known.data(), digest.data(), digest.size()) == 0;
  }
  if (!found) return absl::UnauthenticatedError("the API key is not valid");
  return absl::OkStatus();
}

}  // namespace rosetta::server
