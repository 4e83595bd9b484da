#include "engine/transformer_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
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

void CompactWeights(TransformerModel& model) {
  // Tables stored twice (checkpoints often save tied embeddings under several names).
  const int64_t d = model.config.d_model;
  auto same_table = [d](const float* a, const float* b, int rows) {
    return a != nullptr && b != nullptr &&
           (a == b || std::memcmp(a, b, static_cast<size_t>(rows * d) * sizeof(float)) == 0);
  };
  EmbeddingWeights& source = model.encoder_embeddings;
  EmbeddingWeights& target = model.decoder_embeddings;
  if (source.vocab_size == target.vocab_size &&
      same_table(source.table, target.table, source.vocab_size)) {
    target.table = source.table;
  }
  LinearWeights& projection = model.output_projection;
  if (projection.out == target.vocab_size && projection.in == d &&
      same_table(projection.weight, target.table, target.vocab_size)) {
    projection.weight = target.table;
  }

  // Every pointer into storage that something still reads. A layer whose packed copy serves
  // every row count no longer reads its weights as loaded.
  std::vector<const float*> used;
  auto linear = [&](LinearWeights& w) {
    if (w.packed != nullptr && w.packed_max_rows == std::numeric_limits<int>::max()) {
      w.weight = nullptr;
      w.bias = nullptr;
    }
    used.insert(used.end(), {w.weight, w.bias});
  };
  auto norm = [&](const LayerNormWeights& n) { used.insert(used.end(), {n.gamma, n.beta}); };
  auto embeddings = [&](const EmbeddingWeights& e) {
    used.insert(used.end(), {e.table, e.positions});
    norm(e.norm);
  };
  auto sublayers = [&](SelfAttentionWeights& attention, FeedForwardWeights& ffn) {
    norm(attention.norm);
    linear(attention.qkv);
    linear(attention.output);
    norm(ffn.norm);
    linear(ffn.inner);
    linear(ffn.outer);
  };
  embeddings(model.encoder_embeddings);
  for (EncoderLayerWeights& layer : model.encoder_layers)
    sublayers(layer.self_attention, layer.ffn);
  norm(model.encoder_final_norm);
  embeddings(model.decoder_embeddings);
  for (DecoderLayerWeights& layer : model.decoder_layers) {
    sublayers(layer.self_attention, layer.ffn);
    norm(layer.cross_attention.norm);
    linear(layer.cross_attention.query);
    linear(layer.cross_attention.kv);
    linear(layer.cross_attention.output);
  }
  norm(model.decoder_final_norm);
  linear(model.output_projection);

  std::erase_if(model.storage, [&](const std::unique_ptr<AlignedVector<float>>& buffer) {
    std::less_equal<const float*> le;
    const float* begin = buffer->data();
    const float* end = begin + buffer->size();
    return std::none_of(used.begin(), used.end(), [&](const float* p) {
      return p != nullptr && le(begin, p) && !le(end, p);
    });
  });
}

int64_t WeightBytes(const TransformerModel& model) {
  int64_t bytes = 0;
  for (const auto& buffer : model.storage) bytes += buffer->size() * sizeof(float);
  for (const auto& p : model.packed_storage) {
    bytes += p->data.size() * sizeof(float) + p->data_bf16.size() * sizeof(uint16_t) +
             p->data_int8.size() + p->column_scales.size() * sizeof(float) +
             p->column_offsets.size() * sizeof(int32_t) + p->bias.size() * sizeof(float);
  }
  return bytes;
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
