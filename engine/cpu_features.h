// Which instruction sets the engine's hand-written kernels use.
//
// The AVX-512 kernels (packed GEMM, attention, softmax and friends, top-k) run when the CPU has
// AVX-512F, unless the environment variable ROSETTA_DISABLE_AVX512 is set to anything but "" or
// "0": then the portable paths run instead (the same results within float rounding). The tests
// use it to cover those paths on AVX-512 machines; operators can use it to rule the kernels out.
#ifndef ROSETTA_ENGINE_CPU_FEATURES_H_
#define ROSETTA_ENGINE_CPU_FEATURES_H_

namespace rosetta {

// Decided once per process, at the first call.
bool UseAvx512();

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_CPU_FEATURES_H_
