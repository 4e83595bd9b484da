// Which instruction sets the engine's hand-written kernels use.
//
// The AVX-512 kernels (packed GEMM, attention, softmax and friends, LayerNorm, top-k) run when the
// CPU has AVX-512F; otherwise portable versions run (the same results within float rounding).
// Functions compiled with target_clones (engine/ops.cc) and OpenBLAS choose their own code paths.
#ifndef ROSETTA_ENGINE_CPU_FEATURES_H_
#define ROSETTA_ENGINE_CPU_FEATURES_H_

namespace rosetta {

// Whether the hand-written AVX-512 kernels run: the CPU has AVX-512F and ForcePortableKernels()
// was not called. Thread-safe.
bool UseAvx512();

// From now on the portable kernels run even on AVX-512 CPUs (tests of those paths). Call it
// before loading models: weights already packed for the AVX-512 GEMM stay packed and used.
void ForcePortableKernels();

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_CPU_FEATURES_H_
