#include "engine/sentence_embedding.h"

#include <cmath>
#include <vector>

namespace rosetta {

void MeanPooledEncoderEmbeddings(const TransformerModel& model, std::span<const int32_t> ids,
                                 std::span<const int> offsets, bool normalize, Workspace& workspace,
                                 float* embeddings) {
  const int d = model.config.d_model;
  float* states = workspace.Get(Workspace::kFirstCallerBuffer + 1, ids.size() * d);
  RunEncoder(model, ids, offsets, workspace, states);
  const int sentences = static_cast<int>(offsets.size()) - 1;
  for (int s = 0; s < sentences; ++s) {
    float* out = embeddings + static_cast<int64_t>(s) * d;
    // Accumulate in double: long inputs otherwise lose the low bits that batch parity checks see.
    std::vector<double> sum(d, 0.0);
    for (int r = offsets[s]; r < offsets[s + 1]; ++r) {
      const float* row = states + static_cast<int64_t>(r) * d;
      for (int j = 0; j < d; ++j) sum[j] += row[j];
    }
    const double count = offsets[s + 1] - offsets[s];
    double norm = 0.0;
    for (int j = 0; j < d; ++j) {
      sum[j] /= count;
      norm += sum[j] * sum[j];
    }
    const double scale = normalize && norm > 0.0 ? 1.0 / std::sqrt(norm) : 1.0;
    for (int j = 0; j < d; ++j) out[j] = static_cast<float>(sum[j] * scale);
  }
}

}  // namespace rosetta
