#include "engine/transformer_weights.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rosetta {

namespace {

// Packs `w` for `type`, and uses the packed kernel up to `max_rows` rows (bfloat16, int8: always).
void Pack(TransformerModel& model, LinearWeights& w, ComputeType type, int max_rows) {
  auto packed = std::make_unique<PackedWeights>(PackWeights(w.weight, w.bias, w.out, w.in));
  if (type != ComputeType::kFloat32) {
    if (type == ComputeType::kBfloat16) ConvertToBfloat16(*packed);
    if (type == ComputeType::kInt8) ConvertToInt8(*packed);
    max_rows = std::numeric_limits<int>::max();
  }
  w.packed = packed.get();
  w.packed_max_rows = max_rows;
  model.packed_storage.push_back(std::move(packed));
  model.config.compute_type = type;
}

}  // namespace

void PackDecoderWeights(TransformerModel& model, ComputeType type) {
  if (!PackedGemmSupported()) return;
  auto pack = [&](LinearWeights& w) { Pack(model, w, type, w.packed_max_rows); };
  for (DecoderLayerWeights& layer : model.decoder_layers) {
    pack(layer.self_attention.qkv);
    pack(layer.self_attention.output);
    pack(layer.cross_attention.query);
    pack(layer.cross_attention.output);
    pack(layer.ffn.inner);
    pack(layer.ffn.outer);
  }
  pack(model.output_projection);
}

void PackEncoderWeights(TransformerModel& model, ComputeType type) {
  if (!PackedGemmSupported()) return;
  auto pack = [&](LinearWeights& w) { Pack(model, w, type, std::numeric_limits<int>::max()); };
  for (EncoderLayerWeights& layer : model.encoder_layers) {
    pack(layer.self_attention.qkv);
    pack(layer.self_attention.output);
    pack(layer.ffn.inner);
    pack(layer.ffn.outer);
  }
  for (DecoderLayerWeights& layer : model.decoder_layers) pack(layer.cross_attention.kv);
}

AlignedVector<float> MakeSinusoidalTable(int max_positions, int dim, SinusoidalLayout layout,
                                         int first_time) {
  AlignedVector<float> table(static_cast<size_t>(max_positions) * dim);
  const int half = dim / 2;
  for (int p = 0; p < max_positions; ++p) {
    float* row = table.data() + static_cast<size_t>(p) * dim;
    for (int i = 0; i < half; ++i) {
      double inv_timescale;
      if (layout == SinusoidalLayout::kTensor2Tensor) {
        inv_timescale = std::exp(-i * std::log(10000.0) / std::max(half - 1, 1));
      } else {
        inv_timescale = std::pow(10000.0, -2.0 * i / dim);
      }
      const double angle = (p + first_time) * inv_timescale;
      if (layout == SinusoidalLayout::kInterleaved) {
        row[2 * i] = static_cast<float>(std::sin(angle));
        row[2 * i + 1] = static_cast<float>(std::cos(angle));
      } else {
        row[i] = static_cast<float>(std::sin(angle));
        row[half + i] = static_cast<float>(std::cos(angle));
      }
    }
  }
  return table;
}

}  // namespace rosetta
