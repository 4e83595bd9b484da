// Chooses OpenBLAS's AVX-512 kernels on CPUs that have AVX-512 but that Debian's OpenBLAS 0.3.21
// does not recognise (AMD Zen 4 and 5 fall back to its AVX2 "Haswell" kernels: about 1.8x slower
// sgemm measured here). OpenBLAS reads OPENBLAS_CORETYPE in its own library constructor, which runs
// before main() and before any constructor of ours, so this runs from the executable's
// .preinit_array: the dynamic loader calls it before initialising any shared library.
//
// This file must be linked into executables as an object (not from a static archive, where nothing
// references it). A user who sets OPENBLAS_CORETYPE keeps their choice.
#include <cpuid.h>

#include <cstdlib>

namespace {

bool CpuHasAvx512ForOpenBlas() {
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  if (!(avx512f && avx512dq && avx512bw && avx512vl)) return false;
  // The OS must save the ZMM state (XCR0 bits 5-7) besides SSE/AVX (bits 1-2).
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return false;
  unsigned int xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & 0xe6) == 0xe6;
}

void ChooseOpenBlasCore(int, char**, char**) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  if (CpuHasAvx512ForOpenBlas()) setenv("OPENBLAS_CORETYPE", "SkylakeX", /*overwrite=*/0);
}

}  // namespace

__attribute__((section(".preinit_array"),
               used)) static void (*const kChooseOpenBlasCore)(int, char**,
                                                               char**) = &ChooseOpenBlasCore;
