// Helpers shared by the tests.
#ifndef ROSETTA_TESTS_TEST_UTIL_H_
#define ROSETTA_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace rosetta::testing {

// ../shared beside the repository (models, test sets).
std::string SharedDir();
// A CTranslate2 aren-transliteration model directory, e.g. "v2/aren-transliteration-i8".
std::string ArenModel(const std::string& variant);

// This process's scratch directory (<temp>/rosetta_test_<pid>), which MakeTempDir fills. The
// test main removes it when every test passed and keeps it, naming it, when one failed.
std::string ProcessTempDir();
// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir(const std::string& name);
void WriteFile(const std::string& path, const std::string& content);
std::string ReadFile(const std::string& path);

// Whether `condition` holds within `timeout`, checking it every 100 ms (and once more at the end).
bool Within(absl::Duration timeout, const std::function<bool()>& condition);

std::vector<float> RandomVector(size_t n, std::mt19937& rng, float scale = 1.0f);

}  // namespace rosetta::testing

#endif  // ROSETTA_TESTS_TEST_UTIL_H_
