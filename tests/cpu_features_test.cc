// UseAvx512() follows the CPU unless ROSETTA_DISABLE_AVX512 rules the AVX-512 kernels out. CTest
// runs this file twice: as is, and with ROSETTA_DISABLE_AVX512=1 (cpu_features_test_portable).
#include "engine/cpu_features.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"

namespace rosetta {
namespace {

TEST(CpuFeaturesTest, FollowsTheCpuAndTheEnvironment) {
  const char* disable = std::getenv("ROSETTA_DISABLE_AVX512");
  const bool disabled =
      disable != nullptr && std::string(disable) != "" && std::string(disable) != "0";
  const bool cpu = __builtin_cpu_supports("avx512f") != 0;
  EXPECT_EQ(UseAvx512(), cpu && !disabled)
      << "ROSETTA_DISABLE_AVX512=" << (disable != nullptr ? disable : "(unset)");
  // Decided once: later calls agree.
  EXPECT_EQ(UseAvx512(), UseAvx512());
}

}  // namespace
}  // namespace rosetta
