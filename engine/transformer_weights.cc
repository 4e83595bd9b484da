#include "engine/transformer_weights.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <span>

namespace rosetta {

namespace {

// Packs `w` for `type`, unless packed already.
void Pack(TransformerModel& model, LinearWeights& w, ComputeType type) {
  if (w.packed != nullptr) return;
  auto packed = std::make_unique<PackedWeights>(PackWeights(w.weight, w.bias, w.out, w.in, type));
  w.packed = packed.get();
  model.packed_storage.push_back(std::move(packed));
  model.config.compute_type = type;
}

// Calls visit(p) with every pointer into storage that the model's weights hold (null ones too).
// Packed linears first lose their weights as loaded (null from then on).
template <typename Visit>
void VisitWeightPointers(TransformerModel& model, Visit visit) {
  auto linear = [&](LinearWeights& w) {
    if (w.packed != nullptr) {
      w.weight = nullptr;
      w.bias = nullptr;
    }
    visit(w.weight);
    visit(w.bias);
  };
  auto norm = [&](const LayerNormWeights& n) {
    visit(n.gamma);
    visit(n.beta);
  };
  auto embeddings = [&](const EmbeddingWeights& e) {
    visit(e.table);
    visit(e.positions);
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
  for (EncoderLayerWeights& layer : model.encoder_layers) {
    sublayers(layer.self_attention, layer.ffn);
  }
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
}

// Whether any of `used` points into `buffer`.
bool PointedInto(const AlignedVector<float>& buffer, const std::vector<const float*>& used) {
  std::less_equal<const float*> le;
  const float* begin = buffer.data();
  const float* end = begin + buffer.size();
  return std::any_of(used.begin(), used.end(),
                     [&](const float* p) { return p != nullptr && le(begin, p) && !le(end, p); });
}

// Frees the stored buffers that none of `used` points into.
void FreeUnused(TransformerModel& model, const std::vector<const float*>& used) {
  std::erase_if(model.storage, [&](const std::unique_ptr<AlignedVector<float>>& buffer) {
    return !PointedInto(*buffer, used);
  });
}

// Frees the weights as loaded of those of `linears` that are packed: each buffer that one of them
// starts and nothing in the model points into.
void ReleaseLoadedCopies(TransformerModel& model, std::span<LinearWeights* const> linears) {
  std::vector<const float*> candidates;
  for (LinearWeights* w : linears) {
    if (w->packed == nullptr) continue;
    candidates.insert(candidates.end(), {w->weight, w->bias});
    w->weight = nullptr;
    w->bias = nullptr;
  }
  std::vector<const float*> used;
  VisitWeightPointers(model, [&](const float* p) { used.push_back(p); });
  std::erase_if(model.storage, [&](const std::unique_ptr<AlignedVector<float>>& buffer) {
    return std::find(candidates.begin(), candidates.end(), buffer->data()) != candidates.end() &&
           !PointedInto(*buffer, used);
  });
}

std::array<LinearWeights*, 4> LinearsOf(EncoderLayerWeights& layer) {
  return {&layer.self_attention.qkv, &layer.self_attention.output, &layer.ffn.inner,
          &layer.ffn.outer};
}

std::array<LinearWeights*, 7> LinearsOf(DecoderLayerWeights& layer) {
  return {&layer.self_attention.qkv, &layer.self_attention.output,  &layer.cross_attention.query,
          &layer.cross_attention.kv, &layer.cross_attention.output, &layer.ffn.inner,
          &layer.ffn.outer};
}

void PackAll(TransformerModel& model, std::span<LinearWeights* const> linears, ComputeType type) {
  for (LinearWeights* w : linears) Pack(model, *w, type);
}

}  // namespace

void PackDecoderWeights(TransformerModel& model, ComputeType type) {
  if (!PackedGemmSupported()) return;
  for (DecoderLayerWeights& layer : model.decoder_layers) PackAll(model, LinearsOf(layer), type);
  Pack(model, model.output_projection, type);
}

void PackEncoderWeights(TransformerModel& model, ComputeType type) {
  if (!PackedGemmSupported()) return;
  for (EncoderLayerWeights& layer : model.encoder_layers) PackAll(model, LinearsOf(layer), type);
  for (DecoderLayerWeights& layer : model.decoder_layers) {
    Pack(model, layer.cross_attention.kv, type);
  }
}

void PackEncoderLayer(TransformerModel& model, EncoderLayerWeights& layer, ComputeType type) {
  if (!PackedGemmSupported()) return;
  PackAll(model, LinearsOf(layer), type);
  ReleaseLoadedCopies(model, LinearsOf(layer));
}

void PackDecoderLayer(TransformerModel& model, DecoderLayerWeights& layer, ComputeType type) {
  if (!PackedGemmSupported()) return;
  PackAll(model, LinearsOf(layer), type);
  ReleaseLoadedCopies(model, LinearsOf(layer));
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
  // Position tables: the sinusoidal ones that both sides compute are equal.
  if (source.max_positions == target.max_positions &&
      same_table(source.positions, target.positions, source.max_positions)) {
    target.positions = source.positions;
  }
  LinearWeights& projection = model.output_projection;
  if (projection.out == target.vocab_size && projection.in == d &&
      same_table(projection.weight, target.table, target.vocab_size)) {
    projection.weight = target.table;
  }

  // Every pointer into storage that something still reads (packed layers no longer read their
  // weights as loaded).
  std::vector<const float*> used;
  VisitWeightPointers(model, [&](const float* p) { used.push_back(p); });
  FreeUnused(model, used);
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
