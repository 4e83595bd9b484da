// Scaled dot-product multi-head attention kernels: softmax(Q K^T * scale) V per head.
//
// Rows hold all heads side by side: a row of Q, K, V or the output is num_heads * head_dim floats,
// head h at offset h * head_dim. Callers provide the scratch memory; nothing allocates.
// Thread-safe.
#ifndef ROSETTA_ENGINE_ATTENTION_H_
#define ROSETTA_ENGINE_ATTENTION_H_

#include <cstdint>

namespace rosetta {

struct AttentionShape {
  int num_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;  // usually 1 / sqrt(head_dim)
};

// One query row attends to `n` key/value rows given by pointers (so keys may come from anywhere in
// a cache: beams address their history by index). REQUIRES: n >= 1; `scores` holds n floats.
void AttendRow(const float* query, const float* const* keys, const float* const* values, int n,
               const AttentionShape& shape, float* scores, float* out);

// Attention of `tq` query rows over `tk` contiguous key/value rows, with a padding mask (only keys
// j < key_length are seen) and optionally a causal mask (query i sees keys j <= i + causal_offset).
// Leading dimensions (ld*) are in floats. Reads only the visible key and value rows of each query.
// REQUIRES: every query sees at least one key; `scratch` holds AttendBlockScratchFloats(tq, tk,
// shape) floats.
struct BlockAttentionArgs {
  const float* q = nullptr;
  int ldq = 0;
  const float* k = nullptr;
  int ldk = 0;
  const float* v = nullptr;
  int ldv = 0;
  float* out = nullptr;
  int ldo = 0;
  int tq = 0;
  int tk = 0;
  int key_length = 0;
  bool causal = false;
  int causal_offset = 0;
};
void AttendBlock(const BlockAttentionArgs& args, const AttentionShape& shape, float* scratch);

// Floats of scratch AttendBlock needs for `tq` queries over `tk` keys (at least tq * tk).
int64_t AttendBlockScratchFloats(int tq, int tk, const AttentionShape& shape);

// Keys stored transposed, for keys that many queries read over many calls (a sentence's
// cross-attention memory, attended at every decoding step): kt[c * ldkt + j] is element c of key
// j for c < d and j < n, and zero for n <= j < ldkt.
// REQUIRES: ldkt == TransposedKeyStride(n) (whole blocks of 16 keys are written and read).
int TransposedKeyStride(int n);
void TransposeKeys(const float* k, int ldk, int n, int d, float* kt, int ldkt);

// Attention of `tq` query rows (ldq apart) over `n` keys given transposed (as above) and `n` value
// rows (ldv apart); writes `tq` rows of output (ldo apart). Each key is loaded once for up to four
// queries, and a row's result does not depend on the other rows of the call. REQUIRES: n >= 1;
// kt from TransposeKeys with ldkt == TransposedKeyStride(n); `scratch` holds
// AttendTransposedScratchFloats(n) floats.
void AttendTransposed(const float* q, int ldq, int tq, const float* kt, int ldkt, int n,
                      const float* v, int ldv, const AttentionShape& shape, float* scratch,
                      float* out, int ldo);
int64_t AttendTransposedScratchFloats(int n);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_ATTENTION_H_
