#include "engine/blas.h"

#include <cblas.h>
#include <cpuid.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace rosetta {

void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void SetBlasThreads(int num_threads) { openblas_set_num_threads(num_threads); }

int GetBlasThreads() { return openblas_get_num_threads(); }

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name != nullptr ? name : "unknown";
}

namespace {

bool CpuHasAvx512() {
  unsigned int eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool avx512 = (ebx & (1u << 16)) && (ebx & (1u << 17)) && (ebx & (1u << 30)) &&
                      (ebx & (1u << 31));  // F, DQ, BW, VL: what OpenBLAS's SkylakeX kernels use
  if (!avx512) return false;
  // The OS must save the AVX-512 state (XCR0 bits 5-7) besides SSE and AVX (bits 1-2).
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return false;
  unsigned int xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  return (xcr0_lo & 0xe6) == 0xe6;
}

bool IsAvx512Core(std::string_view core) {
  return core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
}

}  // namespace

void SelectOpenBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or done already
  if (!CpuHasAvx512() || IsAvx512Core(BlasCoreName())) return;
  if (setenv("OPENBLAS_CORETYPE", "SkylakeX", /*overwrite=*/0) != 0) return;
  execv("/proc/self/exe", argv);
  // Still here: the re-execution failed; carry on with the kernels OpenBLAS chose.
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace rosetta
