// The main of every GoogleTest binary here. With ROSETTA_DISABLE_AVX512 set (to anything but ""
// or "0"; CTest's *_portable runs) the engine runs its portable kernels instead of the AVX-512
// ones, so those paths are tested on AVX-512 machines too.
#include <cstdlib>
#include <cstring>

#include "engine/cpu_features.h"
#include "gtest/gtest.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const char* disable = std::getenv("ROSETTA_DISABLE_AVX512");
  if (disable != nullptr && disable[0] != '\0' && std::strcmp(disable, "0") != 0) {
    rosetta::ForcePortableKernels();
  }
  return RUN_ALL_TESTS();
}
