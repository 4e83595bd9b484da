// The API keys file re-read while serving (server/api_key_file): new keys taken into use, bad
// updates refused with the keys read before kept.
#include "server/api_key_file.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::HasSubstr;

constexpr char kFirst[] = "k1-0123456789abcdef";
constexpr char kSecond[] = "k2-FEDCBA9876543210";

std::string Bearer(const char* key) { return absl::StrCat("Bearer ", key); }

// Replaces `path` in one rename, as a Secret update does.
void Replace(const std::string& path, const std::string& contents) {
  testing::WriteFile(path + ".new", contents);
  std::filesystem::rename(path + ".new", path);
}

TEST(ApiKeyFileTest, TakesNewKeysAndRefusesBadUpdates) {
  const std::string path = testing::MakeTempDir("keys") + "/keys";
  testing::WriteFile(path, absl::StrCat(kFirst, "\n"));
  absl::StatusOr<std::unique_ptr<ApiKeyFile>> file = ApiKeyFile::Start(path, absl::Seconds(1));
  ASSERT_TRUE(file.ok()) << file.status();
  ApiKeyFile& keys = **file;
  EXPECT_TRUE(keys.Authenticate(Bearer(kFirst)).ok());
  EXPECT_FALSE(keys.Authenticate(Bearer(kSecond)).ok());

  // The first key revoked, the second added.
  Replace(path, absl::StrCat("# rotated\n", kSecond, "\n"));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return keys.Authenticate(Bearer(kSecond)).ok(); }));
  EXPECT_FALSE(keys.Authenticate(Bearer(kFirst)).ok());
  EXPECT_EQ(keys.updates_accepted(), 1);
  EXPECT_EQ(keys.size(), 1u);
  EXPECT_FALSE(keys.file_refused());

  // An emptied file and a short key: refused once each; the second key still works.
  Replace(path, "");
  EXPECT_TRUE(testing::Within(absl::Seconds(20), [&] { return keys.updates_refused() == 1; }));
  Replace(path, "too-short\n");
  EXPECT_TRUE(testing::Within(absl::Seconds(20), [&] { return keys.updates_refused() == 2; }));
  std::filesystem::remove(path);
  EXPECT_TRUE(testing::Within(absl::Seconds(20), [&] { return keys.updates_refused() == 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(keys.updates_refused(), 3);  // each counted once
  EXPECT_TRUE(keys.Authenticate(Bearer(kSecond)).ok());
  EXPECT_TRUE(keys.file_refused());
  EXPECT_EQ(keys.updates_accepted(), 1);

  // Both keys.
  Replace(path, absl::StrCat(kFirst, "\n", kSecond, "\n"));
  EXPECT_TRUE(
      testing::Within(absl::Seconds(20), [&] { return keys.Authenticate(Bearer(kFirst)).ok(); }));
  EXPECT_TRUE(keys.Authenticate(Bearer(kSecond)).ok());
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_FALSE(keys.file_refused());
}

TEST(ApiKeyFileTest, ZeroIntervalReadsOnce) {
  const std::string path = testing::MakeTempDir("keys") + "/keys";
  testing::WriteFile(path, absl::StrCat(kFirst, "\n"));
  absl::StatusOr<std::unique_ptr<ApiKeyFile>> file = ApiKeyFile::Start(path, absl::ZeroDuration());
  ASSERT_TRUE(file.ok()) << file.status();
  Replace(path, absl::StrCat(kSecond, "\n"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE((*file)->Authenticate(Bearer(kFirst)).ok());
  EXPECT_FALSE((*file)->Authenticate(Bearer(kSecond)).ok());
}

TEST(ApiKeyFileTest, StartFailsLikeLoad) {
  absl::StatusOr<std::unique_ptr<ApiKeyFile>> file =
      ApiKeyFile::Start("/nonexistent/keys", absl::Seconds(1));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("--api_keys_file: cannot read /nonexistent/keys"));
}

}  // namespace
}  // namespace rosetta::server
