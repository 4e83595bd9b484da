// The lane mask of the last, partial AVX-512 vector of a row: shared by the hand-written kernels.
#ifndef ROSETTA_ENGINE_TAIL_MASK_H_
#define ROSETTA_ENGINE_TAIL_MASK_H_

#include <immintrin.h>

#include <cstdint>

namespace rosetta {

// The first `remaining` of 16 float lanes: all 16 from 16 on, none at 0 or below.
inline __mmask16 TailMask(int64_t remaining) {
  if (remaining >= 16) return static_cast<__mmask16>(0xffff);
  if (remaining <= 0) return 0;
  return static_cast<__mmask16>((1u << remaining) - 1);
}

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_TAIL_MASK_H_
