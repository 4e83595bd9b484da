// Thin layer over OpenBLAS: the one GEMM entry point of the engine and its thread control.
//
// Debian's OpenBLAS is built with DYNAMIC_ARCH and picks its kernels when the library initialises,
// before main(). On CPUs it does not know (some AMD Zen 4/5 machines) it falls back to AVX2 kernels
// even when AVX-512 is there (sgemm about 1.8x slower). SelectOpenBlasKernels fixes that.
#ifndef ROSETTA_ENGINE_BLAS_H_
#define ROSETTA_ENGINE_BLAS_H_

#include <string>

namespace rosetta {

// C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C, all row-major.
// op(A) is A when trans_a is false and A^T otherwise (likewise for B).
void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);

// Sets the number of threads OpenBLAS uses for every later GEMM of this process.
void SetBlasThreads(int num_threads);
int GetBlasThreads();

// The kernel family OpenBLAS chose ("SkylakeX", "Haswell", ...), for logs and model info.
std::string BlasCoreName();

// Call first thing in main(). When the CPU has AVX-512, OPENBLAS_CORETYPE is unset and OpenBLAS
// chose kernels without AVX-512, sets OPENBLAS_CORETYPE=SkylakeX and re-executes the program with
// the same arguments (the variable is read only while OpenBLAS initialises, and glibc resets the
// environment after any earlier hook could set it). Returns normally in every other case,
// including when the re-execution fails.
void SelectOpenBlasKernels(char** argv);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_BLAS_H_
