#include "engine/cpu_features.h"

#include <atomic>

namespace rosetta {

namespace {

bool CpuHasAvx512() {
  static const bool has = [] {
    __builtin_cpu_init();  // safe even if called during static initialisation
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return has;
}

std::atomic<bool>& PortableForced() {
  static std::atomic<bool> forced{false};
  return forced;
}

}  // namespace

bool UseAvx512() { return CpuHasAvx512() && !PortableForced().load(std::memory_order_relaxed); }

void ForcePortableKernels() { PortableForced().store(true, std::memory_order_relaxed); }

}  // namespace rosetta
