#include "tests/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rosetta::testing {

std::string SharedDir() {
  if (const char* dir = std::getenv("ROSETTA_SHARED_DIR"); dir != nullptr) return dir;
  return ROSETTA_SHARED_DIR;
}

std::string ArenModel(const std::string& variant) {
  return SharedDir() + "/models/ctranslate2/" + variant;
}

std::string ProcessTempDir() {
  return (std::filesystem::temp_directory_path() / ("rosetta_test_" + std::to_string(::getpid())))
      .string();
}

std::string MakeTempDir(const std::string& name) {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(ProcessTempDir()) /
                              (std::string(info->test_suite_name()) + "." + info->name()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

bool Within(absl::Duration timeout, const std::function<bool()>& condition) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return condition();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace rosetta::testing
