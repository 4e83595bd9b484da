// Reading operator-given small files (server/small_file): regular files of bounded size only.
#include "server/small_file.h"

#include <sys/stat.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(SmallFileTest, ReadsARegularFile) {
  const std::string path = testing::MakeTempDir("files") + "/a";
  const std::string contents(40000, 'x');  // more than one read
  testing::WriteFile(path, contents);
  absl::StatusOr<std::string> read = ReadSmallFile("some_file", path, 40000);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, contents);
}

TEST(SmallFileTest, RefusesWhatIsNotASmallRegularFile) {
  const std::string dir = testing::MakeTempDir("files");
  absl::StatusOr<std::string> read = ReadSmallFile("some_file", dir + "/missing", 100);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(read.status().message(), HasSubstr("--some_file: cannot read " + dir + "/missing"));

  read = ReadSmallFile("some_file", dir, 100);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr("is not a file"));

  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  read = ReadSmallFile("some_file", fifo, 100);  // must not wait for a writer
  EXPECT_THAT(read.status().message(), HasSubstr("is not a file"));

  testing::WriteFile(dir + "/large", std::string(101, 'x'));
  read = ReadSmallFile("some_file", dir + "/large", 100);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), AllOf(HasSubstr("has 101 bytes; at most 100")));
}

}  // namespace
}  // namespace rosetta::server
