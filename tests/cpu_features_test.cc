// UseAvx512() follows the CPU unless the portable kernels were forced. CTest runs this file twice:
// as is, and with ROSETTA_DISABLE_AVX512=1 (cpu_features_test_portable), which the tests' main
// turns into ForcePortableKernels().
#include "engine/cpu_features.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace rosetta {
namespace {

TEST(CpuFeaturesTest, FollowsTheCpuUnlessPortableKernelsAreForced) {
  const char* disable = std::getenv("ROSETTA_DISABLE_AVX512");
  const bool forced =
      disable != nullptr && std::string(disable) != "" && std::string(disable) != "0";
  const bool cpu = __builtin_cpu_supports("avx512f") != 0;
  EXPECT_EQ(UseAvx512(), cpu && !forced)
      << "ROSETTA_DISABLE_AVX512=" << (disable != nullptr ? disable : "(unset)");
}

TEST(CpuFeaturesTest, ForcingPortableKernelsTurnsAvx512Off) {
  // Last in this file: the switch stays on for the rest of the process.
  ForcePortableKernels();
  EXPECT_FALSE(UseAvx512());
}

}  // namespace
}  // namespace rosetta
