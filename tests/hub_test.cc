// Models from the Hub by id, against tests/reference/fake_hub.py on loopback: the first fetch
// downloads into a huggingface_hub-style cache, the second runs with no server at all, an
// interrupted download resumes, a corrupted one is refused, and each failure has a clear error.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/model_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hub/hub_model.h"
#include "tests/test_util.h"

#ifndef ROSETTA_SOURCE_DIR
#define ROSETTA_SOURCE_DIR "."
#endif

namespace rosetta::hub {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kRepo[] = "rosetta-test/aren-transliteration";

// The fake Hub as a child process.
class FakeHub {
 public:
  explicit FakeHub(const std::vector<std::string>& flags) {
    int out[2];
    EXPECT_EQ(pipe(out), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      close(out[0]);
      std::vector<std::string> args = {"/usr/bin/python3",
                                       ROSETTA_SOURCE_DIR "/tests/reference/fake_hub.py"};
      args.insert(args.end(), flags.begin(), flags.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    FILE* stream = fdopen(out[0], "r");
    int port = 0;
    if (fscanf(stream, "port %d", &port) == 1)
      endpoint_ = "http://127.0.0.1:" + std::to_string(port);
    fclose(stream);
  }
  ~FakeHub() { Stop(); }
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = 0;
    }
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  pid_t pid_ = 0;
  std::string endpoint_;
};

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("hub_root");
    fs::create_directories(root_ + "/" + kRepo);
    for (const auto& entry :
         fs::directory_iterator(testing::ArenModel("v2/aren-transliteration"))) {
      fs::copy_file(entry.path(), fs::path(root_) / kRepo / entry.path().filename());
    }
    cache_ = testing::MakeTempDir("hub_cache");
    fs::remove_all(cache_);
    log_ = root_ + "/requests.log";
  }

  HubOptions Options(const std::string& endpoint) {
    HubOptions options;
    options.endpoint = endpoint;
    options.cache_dir = cache_;
    options.log = [this](const std::string& line) { lines_.push_back(line); };
    return options;
  }

  std::string Requests() { return testing::ReadFile(log_); }

  static void ExpectTranslates(const std::string& dir) {
    auto model = LoadTranslationModel(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    auto ids = (*model)->EncodeText("آ ت ز م و ن");
    ASSERT_TRUE(ids.ok());
    auto result = TranslateBatch((*model)->transformer, {*ids}, (*model)->default_options);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ((*model)->DecodeText((*result)[0][0].tokens), "a t z m o n");
  }

  std::string root_, cache_, log_;
  std::vector<std::string> lines_;
};

TEST(HubModelIdTest, ParsesRepositoryIdsOnly) {
  auto id = ParseHubModelId("Helsinki-NLP/opus-mt-en-de");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->repo, "Helsinki-NLP/opus-mt-en-de");
  EXPECT_EQ(id->revision, "main");
  id = ParseHubModelId("sentence-transformers/all-MiniLM-L6-v2@v1.0");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->revision, "v1.0");
  for (const char* bad : {"/models/aren", "./aren", "aren", "a/b/c", "a/../b", "org/na me",
                          "org/name@", "", "org/"}) {
    EXPECT_FALSE(ParseHubModelId(bad).has_value()) << bad;
  }
}

TEST_F(HubTest, DownloadsOnceThenWorksWithoutNetwork) {
  FakeHub hub({"--root", root_, "--log", log_, "--lfs-min-size", "10000"});
  ASSERT_FALSE(hub.endpoint().empty());
  auto dir = FetchHubModel(*ParseHubModelId(kRepo), Options(hub.endpoint()));
  ASSERT_TRUE(dir.ok()) << dir.status();
  ExpectTranslates(*dir);
  // The huggingface_hub layout: snapshot symlinks into blobs named by ETag (sha256 for LFS).
  const fs::path repo_dir = fs::path(cache_) / "models--rosetta-test--aren-transliteration";
  const std::string commit = testing::ReadFile((repo_dir / "refs/main").string());
  EXPECT_EQ(*dir, (repo_dir / "snapshots" / commit).string());
  EXPECT_TRUE(fs::is_symlink(fs::path(*dir) / "model.bin"));
  EXPECT_EQ(fs::read_symlink(fs::path(*dir) / "model.bin").parent_path(), "../../blobs");
  EXPECT_EQ(fs::read_symlink(fs::path(*dir) / "model.bin").filename().string().size(), 64u);
  EXPECT_TRUE(fs::exists(repo_dir / ".no_exist" / commit / "config.json"));
  EXPECT_THAT(Requests(), HasSubstr("GET /lfs/"));
  bool logged = false;
  for (const auto& line : lines_) logged |= line.find("sha256 verified") != std::string::npos;
  EXPECT_TRUE(logged);

  // Second start: the server is gone, the cache serves.
  hub.Stop();
  lines_.clear();
  auto again = FetchHubModel(*ParseHubModelId(kRepo), Options("http://127.0.0.1:9"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *dir);
  ASSERT_FALSE(lines_.empty());
  EXPECT_THAT(lines_[0], HasSubstr("no network access"));
  // By commit too.
  auto by_commit = FetchHubModel(*ParseHubModelId(std::string(kRepo) + "@" + commit),
                                 Options("http://127.0.0.1:9"));
  ASSERT_TRUE(by_commit.ok()) << by_commit.status();
}

TEST_F(HubTest, InterruptedDownloadResumes) {
  {
    FakeHub hub({"--root", root_, "--log", log_, "--interrupt-once", "model.bin"});
    auto first = FetchHubModel(*ParseHubModelId(kRepo), Options(hub.endpoint()));
    ASSERT_FALSE(first.ok());
    EXPECT_TRUE(absl::IsUnavailable(first.status())) << first.status();
    EXPECT_THAT(first.status().message(), HasSubstr("the next start resumes it"));
    // The partial file waits beside the blobs, never in the snapshot.
    int partial = 0;
    for (const auto& e : fs::recursive_directory_iterator(cache_)) {
      if (e.path().extension() == ".incomplete") {
        ++partial;
        EXPECT_GT(fs::file_size(e.path()), 0u);
      }
      EXPECT_NE(e.path().filename(), "model.bin");
    }
    EXPECT_EQ(partial, 1);
    auto second = FetchHubModel(*ParseHubModelId(kRepo), Options(hub.endpoint()));
    ASSERT_TRUE(second.ok()) << second.status();
    ExpectTranslates(*second);
  }
  EXPECT_THAT(Requests(),
              ::testing::ContainsRegex("GET /lfs/[0-9a-f]+\\?file=\\S+ bytes=[1-9][0-9]*-"));
  bool resumed = false;
  for (const auto& line : lines_) resumed |= line.find("resuming after") != std::string::npos;
  EXPECT_TRUE(resumed);
}

TEST_F(HubTest, CorruptedDownloadIsRefusedAndRemoved) {
  FakeHub hub({"--root", root_, "--corrupt", "model.bin"});
  auto dir = FetchHubModel(*ParseHubModelId(kRepo), Options(hub.endpoint()));
  ASSERT_FALSE(dir.ok());
  EXPECT_TRUE(absl::IsDataLoss(dir.status())) << dir.status();
  EXPECT_THAT(dir.status().message(), HasSubstr("model.bin: sha256"));
  for (const auto& e : fs::recursive_directory_iterator(cache_)) {
    EXPECT_NE(e.path().extension(), ".incomplete");
    EXPECT_NE(e.path().filename(), "model.bin") << "a corrupt file reached the snapshot";
  }
}

TEST_F(HubTest, FailuresHaveClearErrors) {
  {
    FakeHub hub({"--root", root_});
    auto missing = FetchHubModel(*ParseHubModelId("rosetta-test/nope"), Options(hub.endpoint()));
    EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
    EXPECT_THAT(missing.status().message(), HasSubstr("repository rosetta-test/nope not found"));
    auto revision =
        FetchHubModel(*ParseHubModelId(std::string(kRepo) + "@v9"), Options(hub.endpoint()));
    EXPECT_TRUE(absl::IsNotFound(revision.status())) << revision.status();
    EXPECT_THAT(revision.status().message(), HasSubstr("revision \"v9\""));
    // A repository without weights.
    fs::create_directories(root_ + "/rosetta-test/empty");
    testing::WriteFile(root_ + "/rosetta-test/empty/config.json", "{\"model_type\": \"marian\"}");
    auto empty = FetchHubModel(*ParseHubModelId("rosetta-test/empty"), Options(hub.endpoint()));
    EXPECT_TRUE(absl::IsNotFound(empty.status())) << empty.status();
    EXPECT_THAT(empty.status().message(), HasSubstr("no weights"));
  }
  {
    FakeHub hub({"--root", root_, "--token", "secret"});
    auto anonymous = FetchHubModel(*ParseHubModelId(kRepo), Options(hub.endpoint()));
    EXPECT_THAT(anonymous.status().message(), HasSubstr("set HF_TOKEN"));
    HubOptions wrong = Options(hub.endpoint());
    wrong.token = "guess";
    auto refused = FetchHubModel(*ParseHubModelId(kRepo), wrong);
    EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();
    HubOptions right = Options(hub.endpoint());
    right.token = "secret";
    auto ok = FetchHubModel(*ParseHubModelId(kRepo), right);
    EXPECT_TRUE(ok.ok()) << ok.status();
  }
  fs::remove_all(cache_);
  auto offline_empty = FetchHubModel(*ParseHubModelId(kRepo), Options("http://127.0.0.1:9"));
  EXPECT_TRUE(absl::IsUnavailable(offline_empty.status())) << offline_empty.status();
  EXPECT_THAT(offline_empty.status().message(), HasSubstr("cannot reach"));
  HubOptions offline = Options("http://127.0.0.1:9");
  offline.offline = true;
  auto forced = FetchHubModel(*ParseHubModelId(kRepo), offline);
  EXPECT_THAT(forced.status().message(), HasSubstr("HF_HUB_OFFLINE"));
}

}  // namespace
}  // namespace rosetta::hub
