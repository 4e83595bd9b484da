#include "engine/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace rosetta {

bool UseAvx512() {
  static const bool use = [] {
    const char* disable = std::getenv("ROSETTA_DISABLE_AVX512");
    if (disable != nullptr && disable[0] != '\0' && std::strcmp(disable, "0") != 0) return false;
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return use;
}

}  // namespace rosetta
