// The main of every GoogleTest binary here. With ROSETTA_DISABLE_AVX512 set (to anything but ""
// or "0"; CTest's *_portable runs) the engine runs its portable kernels instead of the AVX-512
// ones, so those paths are tested on AVX-512 machines too. The scratch files the tests wrote are
// removed when every test passed; after a failure they stay for inspection and their place is
// named.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "engine/cpu_features.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* disable = std::getenv("ROSETTA_DISABLE_AVX512");
  if (disable != nullptr && disable[0] != '\0' && std::strcmp(disable, "0") != 0) {
    rosetta::ForcePortableKernels();
  }
  const int result = RUN_ALL_TESTS();
  const std::filesystem::path scratch = rosetta::testing::ProcessTempDir();
  std::error_code error;
  if (!std::filesystem::exists(scratch, error)) return result;
  if (result == 0) {
    std::filesystem::remove_all(scratch, error);
    if (error) std::cerr << "could not remove " << scratch << ": " << error.message() << "\n";
  } else {
    std::cerr << "the failed run's test files are in " << scratch << "\n";
  }
  return result;
}
