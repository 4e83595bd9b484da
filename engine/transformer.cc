#include "engine/transformer.h"

#include <cmath>
#include <cstring>

#include "engine/attention.h"
#include "engine/blas.h"
#include "engine/ops.h"
#include "engine/packed_gemm.h"

namespace rosetta {

float* Workspace::Get(int index, size_t floats) {
  if (buffers_.size() <= static_cast<size_t>(index)) buffers_.resize(index + 1);
  AlignedVector<float>& buffer = buffers_[index];
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

namespace {

// Workspace slots, one per distinct live buffer.
enum Buffer : int {
  kNormed = 0,
  kQkv,
  kContext,
  kProjected,
  kFfnInner,
  kQuery,
  kScores,
  kCrossKv,
  kPointers,
};
static_assert(kPointers < Workspace::kFirstCallerBuffer);

void Linear(const LinearWeights& w, const float* x, int rows, float* y, Workspace& ws) {
  if (w.packed != nullptr && rows <= w.packed_max_rows) {
    PackedLinear(x, rows, w.in, *w.packed, y, w.out, ws.pool());
    return;
  }
  // Large GEMMs: each thread of the pool multiplies by a slice of the output columns, with
  // OpenBLAS single-threaded (one set of threads for the whole engine, none spinning idle).
  auto columns = [&](int begin, int end) {
    const int n = end - begin;
    Gemm(false, true, rows, n, w.in, 1.0f, x, w.in, w.weight + static_cast<int64_t>(begin) * w.in,
         w.in, 0.0f, y + begin, w.out);
    if (w.bias != nullptr) {
      for (int r = 0; r < rows; ++r)
        Add(y + static_cast<int64_t>(r) * w.out + begin, w.bias + begin,
            y + static_cast<int64_t>(r) * w.out + begin, n);
    }
  };
  constexpr int kColumnAlignment = 64;  // slices that start on cache lines and kernel widths
  const int threads = ws.pool() != nullptr ? ws.pool()->num_threads() : 1;
  const int blocks = (w.out + kColumnAlignment - 1) / kColumnAlignment;
  if (threads == 1 || blocks < 2) {
    columns(0, w.out);
    return;
  }
  ws.pool()->ParallelFor(blocks, [&](int begin, int end) {
    columns(begin * kColumnAlignment, std::min(end * kColumnAlignment, w.out));
  });
}

void ApplyNorm(const TransformerConfig& config, const LayerNormWeights& norm, const float* x,
               int rows, float* out) {
  LayerNorm(x, norm.gamma, norm.beta, config.layer_norm_epsilon, rows, config.d_model, out);
}

// Pre-norm: returns LN(x) in `normed`; post-norm: returns x itself (normalised after the residual).
const float* SublayerInput(const TransformerConfig& config, const LayerNormWeights& norm,
                           const float* x, int rows, float* normed) {
  if (!config.pre_norm) return x;
  ApplyNorm(config, norm, x, rows, normed);
  return normed;
}

// x += sublayer output; post-norm then normalises x in place.
void Residual(const TransformerConfig& config, const LayerNormWeights& norm, const float* sublayer,
              int rows, float* x) {
  const int64_t n = static_cast<int64_t>(rows) * config.d_model;
  Add(x, sublayer, x, n);
  if (!config.pre_norm) ApplyNorm(config, norm, x, rows, x);
}

void FeedForward(const TransformerModel& model, const FeedForwardWeights& ffn, int rows, float* x,
                 Workspace& ws) {
  const TransformerConfig& config = model.config;
  float* normed = ws.Get(kNormed, static_cast<size_t>(rows) * config.d_model);
  float* inner = ws.Get(kFfnInner, static_cast<size_t>(rows) * ffn.inner.out);
  float* projected = ws.Get(kProjected, static_cast<size_t>(rows) * config.d_model);
  const float* input = SublayerInput(config, ffn.norm, x, rows, normed);
  Linear(ffn.inner, input, rows, inner, ws);
  ApplyActivation(config.activation, inner, static_cast<int64_t>(rows) * ffn.inner.out);
  Linear(ffn.outer, inner, rows, projected, ws);
  Residual(config, ffn.norm, projected, rows, x);
}

void Embed(const EmbeddingWeights& embeddings, int d_model, int token, int position, float* out) {
  const float* row = embeddings.table + static_cast<int64_t>(token) * d_model;
  for (int c = 0; c < d_model; ++c) out[c] = row[c] * embeddings.scale;
  if (embeddings.positions != nullptr) {
    Add(out, embeddings.positions + static_cast<int64_t>(position) * d_model, out, d_model);
  }
}

// Runs fn(r) for r in [0, rows) on the workspace's threads.
template <typename Fn>
void ParallelRows(Workspace& ws, int rows, const Fn& fn) {
  if (ws.pool() == nullptr) {
    for (int r = 0; r < rows; ++r) fn(r);
    return;
  }
  ws.pool()->ParallelFor(rows, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) fn(r);
  });
}

AttentionShape ShapeOf(const TransformerModel& model) {
  AttentionShape shape;
  shape.num_heads = model.config.num_heads;
  shape.head_dim = model.head_dim();
  shape.scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
  return shape;
}

}  // namespace

void RunEncoder(const TransformerModel& model, std::span<const int32_t> ids,
                std::span<const int> offsets, Workspace& ws, float* x) {
  const TransformerConfig& config = model.config;
  const int d = config.d_model;
  const int rows = static_cast<int>(ids.size());
  const int num_sentences = static_cast<int>(offsets.size()) - 1;
  for (int s = 0; s < num_sentences; ++s) {
    for (int r = offsets[s]; r < offsets[s + 1]; ++r) {
      Embed(model.encoder_embeddings, d, ids[r], r - offsets[s], x + static_cast<int64_t>(r) * d);
    }
  }
  if (model.encoder_embeddings.norm.present()) {
    ApplyNorm(config, model.encoder_embeddings.norm, x, rows, x);
  }
  std::vector<int64_t> score_offsets(num_sentences + 1, 0);
  for (int s = 0; s < num_sentences; ++s) {
    const int64_t length = offsets[s + 1] - offsets[s];
    score_offsets[s + 1] = score_offsets[s] + length * length;
  }
  const size_t score_floats = std::max<int64_t>(score_offsets.back(), 1);

  const AttentionShape shape = ShapeOf(model);
  for (const EncoderLayerWeights& layer : model.encoder_layers) {
    const SelfAttentionWeights& attn = layer.self_attention;
    float* normed = ws.Get(kNormed, static_cast<size_t>(rows) * d);
    float* qkv = ws.Get(kQkv, static_cast<size_t>(rows) * 3 * d);
    float* context = ws.Get(kContext, static_cast<size_t>(rows) * d);
    float* projected = ws.Get(kProjected, static_cast<size_t>(rows) * d);
    Linear(attn.qkv, SublayerInput(config, attn.norm, x, rows, normed), rows, qkv, ws);
    // Sentences are attended in parallel, each with its own scratch of length^2 scores.
    float* scores = ws.Get(kScores, score_floats);
    ParallelRows(ws, num_sentences, [&](int s) {
      const int begin = offsets[s];
      const int length = offsets[s + 1] - begin;
      if (length == 0) return;
      BlockAttentionArgs args;
      args.q = qkv + static_cast<int64_t>(begin) * 3 * d;
      args.k = args.q + d;
      args.v = args.q + 2 * d;
      args.ldq = args.ldk = args.ldv = 3 * d;
      args.out = context + static_cast<int64_t>(begin) * d;
      args.ldo = d;
      args.tq = args.tk = args.key_length = length;
      AttendBlock(args, shape, scores + score_offsets[s]);
    });
    Linear(attn.output, context, rows, projected, ws);
    Residual(config, attn.norm, projected, rows, x);
    FeedForward(model, layer.ffn, rows, x, ws);
  }
  if (model.encoder_final_norm.present()) ApplyNorm(config, model.encoder_final_norm, x, rows, x);
}

int64_t CrossMemoryFloats(const TransformerModel& model, int length) {
  return static_cast<int64_t>(model.decoder_layers.size()) * length * 2 * model.config.d_model;
}

void ComputeCrossMemory(const TransformerModel& model, const float* encoder_output,
                        std::span<const int> offsets, std::span<float* const> memories,
                        Workspace& ws) {
  const int d = model.config.d_model;
  const int rows = offsets.back();
  const int num_sentences = static_cast<int>(offsets.size()) - 1;
  float* kv = ws.Get(kCrossKv, static_cast<size_t>(rows) * 2 * d);
  for (size_t l = 0; l < model.decoder_layers.size(); ++l) {
    Linear(model.decoder_layers[l].cross_attention.kv, encoder_output, rows, kv, ws);
    for (int s = 0; s < num_sentences; ++s) {
      const int length = offsets[s + 1] - offsets[s];
      float* dst = memories[s] + static_cast<int64_t>(l) * length * 2 * d;
      std::memcpy(dst, kv + static_cast<int64_t>(offsets[s]) * 2 * d,
                  sizeof(float) * static_cast<size_t>(length) * 2 * d);
    }
  }
}

void RunDecoderStep(const TransformerModel& model, std::span<const DecoderRow> step_rows,
                    DecoderCache& cache, Workspace& ws, float* logits) {
  const TransformerConfig& config = model.config;
  const int d = config.d_model;
  const int rows = static_cast<int>(step_rows.size());
  const AttentionShape shape = ShapeOf(model);

  float* x = ws.Get(kQuery, static_cast<size_t>(rows) * d);  // the residual stream
  int max_keys = 0;
  for (int r = 0; r < rows; ++r) {
    const DecoderRow& row = step_rows[r];
    Embed(model.decoder_embeddings, d, row.token, row.step, x + static_cast<int64_t>(r) * d);
    max_keys = std::max({max_keys, row.step + 1, row.source_length});
  }
  // Scratch per row (scores, key and value row pointers), so rows can be attended in parallel.
  float* scores = ws.Get(kScores, static_cast<size_t>(rows) * max_keys);
  auto* pointers = reinterpret_cast<const float**>(
      ws.Get(kPointers,
             2 * static_cast<size_t>(rows) * max_keys * sizeof(const float*) / sizeof(float) + 2));
  auto row_scratch = [&](int r, float** row_scores, const float*** key_rows,
                         const float*** value_rows) {
    *row_scores = scores + static_cast<int64_t>(r) * max_keys;
    *key_rows = pointers + 2 * static_cast<int64_t>(r) * max_keys;
    *value_rows = *key_rows + max_keys;
  };
  for (size_t l = 0; l < model.decoder_layers.size(); ++l) {
    const DecoderLayerWeights& layer = model.decoder_layers[l];
    float* normed = ws.Get(kNormed, static_cast<size_t>(rows) * d);
    float* qkv = ws.Get(kQkv, static_cast<size_t>(rows) * 3 * d);
    float* context = ws.Get(kContext, static_cast<size_t>(rows) * d);
    float* projected = ws.Get(kProjected, static_cast<size_t>(rows) * d);

    // Masked self-attention over each beam's own history (the causal mask is the history itself).
    const SelfAttentionWeights& self = layer.self_attention;
    Linear(self.qkv, SublayerInput(config, self.norm, x, rows, normed), rows, qkv, ws);
    float* keys = cache.Keys(static_cast<int>(l));
    float* values = cache.Values(static_cast<int>(l));
    ParallelRows(ws, rows, [&](int r) {
      const DecoderRow& row = step_rows[r];
      float* row_scores;
      const float** key_rows;
      const float** value_rows;
      row_scratch(r, &row_scores, &key_rows, &value_rows);
      const float* q = qkv + static_cast<int64_t>(r) * 3 * d;
      const int64_t own = row.history[row.step];
      std::memcpy(keys + own, q + d, sizeof(float) * d);
      std::memcpy(values + own, q + 2 * d, sizeof(float) * d);
      for (int j = 0; j <= row.step; ++j) {
        key_rows[j] = keys + row.history[j];
        value_rows[j] = values + row.history[j];
      }
      AttendRow(q, key_rows, value_rows, row.step + 1, shape, row_scores,
                context + static_cast<int64_t>(r) * d);
    });
    Linear(self.output, context, rows, projected, ws);
    Residual(config, self.norm, projected, rows, x);

    // Encoder-decoder attention over the sentence's precomputed keys and values.
    const CrossAttentionWeights& cross = layer.cross_attention;
    Linear(cross.query, SublayerInput(config, cross.norm, x, rows, normed), rows, qkv, ws);
    ParallelRows(ws, rows, [&](int r) {
      const DecoderRow& row = step_rows[r];
      float* row_scores;
      const float** key_rows;
      const float** value_rows;
      row_scratch(r, &row_scores, &key_rows, &value_rows);
      const float* memory = row.cross_memory + static_cast<int64_t>(l) * row.source_length * 2 * d;
      for (int j = 0; j < row.source_length; ++j) {
        key_rows[j] = memory + static_cast<int64_t>(j) * 2 * d;
        value_rows[j] = key_rows[j] + d;
      }
      AttendRow(qkv + static_cast<int64_t>(r) * d, key_rows, value_rows, row.source_length, shape,
                row_scores, context + static_cast<int64_t>(r) * d);
    });
    Linear(cross.output, context, rows, projected, ws);
    Residual(config, cross.norm, projected, rows, x);

    FeedForward(model, layer.ffn, rows, x, ws);
  }
  const float* final_states = x;
  if (model.decoder_final_norm.present()) {
    float* normed = ws.Get(kNormed, static_cast<size_t>(rows) * d);
    ApplyNorm(config, model.decoder_final_norm, x, rows, normed);
    final_states = normed;
  }
  Linear(model.output_projection, final_states, rows, logits, ws);
}

}  // namespace rosetta
