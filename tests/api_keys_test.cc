// API keys (server/api_keys): reading the keys file, and which authorization values pass.
#include "server/api_keys.h"

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kFirst[] = "k1-0123456789abcdef";
constexpr char kSecond[] = "k2-FEDCBA9876543210";

std::string KeysFile(const std::string& contents) {
  const std::string path = testing::MakeTempDir("keys") + "/keys";
  testing::WriteFile(path, contents);
  return path;
}

TEST(ApiKeysTest, LoadsKeysSkippingCommentsAndBlankLines) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load(
      KeysFile(absl::StrCat("# service A\n", kFirst, "\n\n  ", kSecond, "  \r\n# retired\n")));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 2u);
  EXPECT_TRUE(keys->Authenticate(absl::StrCat("Bearer ", kFirst)).ok());
  EXPECT_TRUE(keys->Authenticate(absl::StrCat("Bearer ", kSecond)).ok());
  // The scheme in any case, spaces around.
  EXPECT_TRUE(keys->Authenticate(absl::StrCat("  bearer   ", kSecond, " ")).ok());
}

TEST(ApiKeysTest, RefusesMissingOrWrongKeys) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load(KeysFile(absl::StrCat(kFirst, "\n")));
  ASSERT_TRUE(keys.ok()) << keys.status();
  absl::Status status = keys->Authenticate(std::nullopt);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(status.message(), HasSubstr("authorization: Bearer KEY"));

  for (const std::string& wrong :
       {absl::StrCat("Bearer ", kSecond), absl::StrCat("Bearer ", kFirst, "x"),
        absl::StrCat("Bearer ", std::string(kFirst).substr(0, 10)),
        absl::StrCat("Bearer ", kFirst, "\n", kFirst)}) {
    status = keys->Authenticate(wrong);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << wrong;
    EXPECT_THAT(status.message(), HasSubstr("not valid")) << wrong;
  }
  // The key alone, or another scheme: the message says what the value must look like.
  for (const std::string& malformed :
       {std::string(kFirst), absl::StrCat("Basic ", kFirst), std::string("Bearer"),
        std::string("Bearer "), std::string()}) {
    status = keys->Authenticate(malformed);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << malformed;
    EXPECT_THAT(status.message(), HasSubstr("must be \"Bearer KEY\"")) << malformed;
  }
}

TEST(ApiKeysTest, LoadErrorsNameTheFileAndLineButNotTheKey) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Load("/nonexistent/keys");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(keys.status().message(),
              AllOf(HasSubstr("--api_keys_file"), HasSubstr("/nonexistent/keys")));

  const std::string empty = KeysFile("# no keys yet\n\n");
  keys = ApiKeys::Load(empty);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), AllOf(HasSubstr(empty), HasSubstr("holds no key")));

  const std::string short_key = KeysFile(absl::StrCat(kFirst, "\nshort-secret\n"));
  keys = ApiKeys::Load(short_key);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              AllOf(HasSubstr(short_key + ":2"), HasSubstr("12 characters; at least 16"),
                    Not(HasSubstr("short-secret"))));

  keys = ApiKeys::Load(KeysFile("two words in one key line\n"));
  EXPECT_THAT(keys.status().message(),
              AllOf(HasSubstr(":1"), HasSubstr("printable ASCII without spaces"),
                    Not(HasSubstr("two words"))));
  // gRPC metadata cannot carry such a key: no client could send it.
  keys = ApiKeys::Load(KeysFile("k\xc3\xa9-0123456789abcdef\n"));
  EXPECT_THAT(keys.status().message(), HasSubstr("printable ASCII without spaces"));
}

}  // namespace
}  // namespace rosetta::server
