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
  kCrossScratch,
};
static_assert(kCrossScratch < Workspace::kFirstCallerBuffer);

void Linear(const LinearWeights& w, const float* x, int rows, float* y, ThreadPool* pool) {
  if (w.packed != nullptr) {
    PackedLinear(x, rows, w.in, *w.packed, y, w.out, pool);
    return;
  }
  // Without the packed kernel: each thread of the pool multiplies by a slice of the output columns,
  // with OpenBLAS single-threaded (one set of threads for the whole engine, none spinning idle).
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
  const int threads = pool != nullptr ? pool->num_threads() : 1;
  const int blocks = (w.out + kColumnAlignment - 1) / kColumnAlignment;
  if (threads == 1 || blocks < 2) {
    columns(0, w.out);
    return;
  }
  pool->ParallelFor(blocks, [&](int begin, int end) {
    columns(begin * kColumnAlignment, std::min(end * kColumnAlignment, w.out));
  });
}

// Runs fn(begin, end) over [0, n) on `pool`'s threads, or at once on this thread when `pool` is
// null or the work is too small to be worth a hand-off.
template <typename Fn>
void ForRange(ThreadPool* pool, int n, int64_t work, const Fn& fn) {
  // Below about this many floats of element-wise work (a LayerNorm of 32 rows of 384 is 12,288),
  // waking the other threads likely costs more than it saves. A guess, not tuned.
  constexpr int64_t kMinParallelWork = 16384;
  if (pool == nullptr || pool->num_threads() == 1 || work < kMinParallelWork) {
    fn(0, n);
    return;
  }
  pool->ParallelFor(n, fn);
}

// LN(x) into `out`, rows split across `pool` (null: this thread).
void ApplyNorm(const TransformerConfig& config, const LayerNormWeights& norm, const float* x,
               int rows, float* out, ThreadPool* pool) {
  const int d = config.d_model;
  ForRange(pool, rows, static_cast<int64_t>(rows) * d, [&](int begin, int end) {
    LayerNorm(x + static_cast<int64_t>(begin) * d, norm.gamma, norm.beta, config.layer_norm_epsilon,
              end - begin, d, out + static_cast<int64_t>(begin) * d);
  });
}

// Pre-norm: returns LN(x) in `normed`; post-norm: returns x itself (normalised after the residual).
const float* SublayerInput(const TransformerConfig& config, const LayerNormWeights& norm,
                           const float* x, int rows, float* normed, ThreadPool* pool) {
  if (!config.pre_norm) return x;
  ApplyNorm(config, norm, x, rows, normed, pool);
  return normed;
}

// x += sublayer output; post-norm then normalises x in place (one fused pass). Rows split across
// `pool` (null: this thread).
void Residual(const TransformerConfig& config, const LayerNormWeights& norm, const float* sublayer,
              int rows, float* x, ThreadPool* pool) {
  const int d = config.d_model;
  ForRange(pool, rows, static_cast<int64_t>(rows) * d, [&](int begin, int end) {
    float* xb = x + static_cast<int64_t>(begin) * d;
    const float* sb = sublayer + static_cast<int64_t>(begin) * d;
    if (config.pre_norm) {
      Add(xb, sb, xb, static_cast<int64_t>(end - begin) * d);
    } else {
      AddLayerNorm(xb, sb, norm.gamma, norm.beta, config.layer_norm_epsilon, end - begin, d, xb);
    }
  });
}

// The activation of the feed-forward layer over [rows x width], rows split across `pool`.
void Activate(const TransformerConfig& config, float* inner, int rows, int width,
              ThreadPool* pool) {
  ForRange(pool, rows, static_cast<int64_t>(rows) * width, [&](int begin, int end) {
    ApplyActivation(config.activation, inner + static_cast<int64_t>(begin) * width,
                    static_cast<int64_t>(end - begin) * width);
  });
}

// The feed-forward sublayer over `rows` rows of the residual stream x, with the caller's buffers
// (normed: rows x d_model, inner: rows x inner width, projected: rows x d_model).
void FeedForward(const TransformerConfig& config, const FeedForwardWeights& ffn, int rows, float* x,
                 float* normed, float* inner, float* projected, ThreadPool* pool) {
  Linear(ffn.inner, SublayerInput(config, ffn.norm, x, rows, normed, pool), rows, inner, pool);
  Activate(config, inner, rows, ffn.inner.out, pool);
  Linear(ffn.outer, inner, rows, projected, pool);
  Residual(config, ffn.norm, projected, rows, x, pool);
}

void Embed(const EmbeddingWeights& embeddings, int d_model, int token, int position, float* out) {
  const float* row = embeddings.table + static_cast<int64_t>(token) * d_model;
  for (int c = 0; c < d_model; ++c) out[c] = row[c] * embeddings.scale;
  if (embeddings.positions != nullptr) {
    Add(out, embeddings.positions + static_cast<int64_t>(position) * d_model, out, d_model);
  }
}

// Runs fn(r) for r in [0, rows) on the workspace's threads (rows of a step, or runs of them).
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

// Buffers of one encoder pass, sized for the whole packed batch and indexed by absolute row, so
// groups of sentences encoded in parallel each use their own rows of them.
struct EncoderPass {
  const TransformerModel* model = nullptr;
  std::span<const int32_t> ids;
  std::span<const int> offsets;
  float* x = nullptr;
  float* normed = nullptr;
  float* qkv = nullptr;
  float* context = nullptr;
  float* projected = nullptr;
  float* inner = nullptr;
  // Attention scratch: one slot of `scratch_floats` per thread that attends.
  float* scratch = nullptr;
  int64_t scratch_floats = 0;
};

// Encodes sentences [first, last) of the pass (embeddings, every layer, the final norm) on
// `pool`'s threads, or on this thread alone when `pool` is null (using scratch slot `slot`).
void EncodeSentences(const EncoderPass& pass, int first, int last, ThreadPool* pool, int slot) {
  const TransformerModel& model = *pass.model;
  const TransformerConfig& config = model.config;
  const int d = config.d_model;
  const int row0 = pass.offsets[first];
  const int rows = pass.offsets[last] - row0;
  const auto at = [&](float* buffer, int width) {
    return buffer + static_cast<int64_t>(row0) * width;
  };
  float* x = at(pass.x, d);
  float* normed = at(pass.normed, d);
  float* qkv = at(pass.qkv, 3 * d);
  float* context = at(pass.context, d);
  float* projected = at(pass.projected, d);

  ForRange(pool, last - first, static_cast<int64_t>(rows) * d, [&](int begin, int end) {
    for (int s = first + begin; s < first + end; ++s) {
      for (int r = pass.offsets[s]; r < pass.offsets[s + 1]; ++r) {
        Embed(model.encoder_embeddings, d, pass.ids[r], r - pass.offsets[s],
              pass.x + static_cast<int64_t>(r) * d);
      }
    }
  });
  if (model.encoder_embeddings.norm.present()) {
    ApplyNorm(config, model.encoder_embeddings.norm, x, rows, x, pool);
  }

  const AttentionShape shape = ShapeOf(model);
  const int heads = shape.num_heads;
  // (sentence, head) pairs, so that a single sentence still spreads over the threads; a thread
  // attends each sentence of its slice in one call over the slice's heads of it.
  const int pairs = (last - first) * heads;
  const int threads = pool != nullptr ? pool->num_threads() : 1;
  auto attend = [&](int pair_begin, int pair_end, float* scratch) {
    for (int pair = pair_begin; pair < pair_end;) {
      const int s = first + pair / heads;
      const int head = pair % heads;
      AttentionShape part = shape;
      part.num_heads = std::min(heads - head, pair_end - pair);
      pair += part.num_heads;
      const int begin = pass.offsets[s];
      const int length = pass.offsets[s + 1] - begin;
      if (length == 0) continue;
      const int offset = head * shape.head_dim;
      BlockAttentionArgs args;
      args.q = pass.qkv + static_cast<int64_t>(begin) * 3 * d + offset;
      args.k = args.q + d;
      args.v = args.q + 2 * d;
      args.ldq = args.ldk = args.ldv = 3 * d;
      args.out = pass.context + static_cast<int64_t>(begin) * d + offset;
      args.ldo = d;
      args.tq = args.tk = args.key_length = length;
      AttendBlock(args, part, scratch);
    }
  };

  for (const EncoderLayerWeights& layer : model.encoder_layers) {
    const SelfAttentionWeights& attn = layer.self_attention;
    Linear(attn.qkv, SublayerInput(config, attn.norm, x, rows, normed, pool), rows, qkv, pool);
    if (pool == nullptr || threads == 1) {
      attend(0, pairs, pass.scratch + slot * pass.scratch_floats);
    } else {
      // One contiguous slice of pairs per thread, each with its own scratch slot.
      pool->ParallelFor(threads, [&](int begin, int end) {
        for (int t = begin; t < end; ++t) {
          attend(static_cast<int64_t>(pairs) * t / threads,
                 static_cast<int64_t>(pairs) * (t + 1) / threads,
                 pass.scratch + t * pass.scratch_floats);
        }
      });
    }
    Linear(attn.output, context, rows, projected, pool);
    Residual(config, attn.norm, projected, rows, x, pool);

    FeedForward(config, layer.ffn, rows, x, normed, at(pass.inner, layer.ffn.inner.out), projected,
                pool);
  }
  if (model.encoder_final_norm.present()) {
    ApplyNorm(config, model.encoder_final_norm, x, rows, x, pool);
  }
}

// Splits sentences into `groups` contiguous groups of about equal rows: group g is sentences
// [bounds[g], bounds[g+1]). Returns false when that cannot be done evenly (fewer sentences than
// groups, or one long sentence among short ones): the largest group would exceed the mean by
// more than kMaxImbalance (20%: a guess at where splitting every op across the threads wins;
// not tuned).
bool SplitSentences(std::span<const int> offsets, int groups, std::vector<int>& bounds) {
  constexpr double kMaxImbalance = 1.2;
  const int sentences = static_cast<int>(offsets.size()) - 1;
  const int rows = offsets.back();
  if (sentences < groups || rows == 0) return false;
  bounds.assign(1, 0);
  for (int g = 1; g < groups; ++g) {
    // The first sentence boundary at or past the ideal cut, or the one just before if closer.
    const double target = static_cast<double>(rows) * g / groups;
    int s = bounds.back() + 1;
    while (s < sentences && offsets[s] < target) ++s;
    if (s - 1 > bounds.back() && target - offsets[s - 1] < offsets[s] - target) --s;
    const int groups_left = groups - g;
    s = std::min(s, sentences - groups_left);
    bounds.push_back(s);
  }
  bounds.push_back(sentences);
  const double mean = static_cast<double>(rows) / groups;
  for (int g = 0; g < groups; ++g) {
    if (bounds[g + 1] <= bounds[g]) return false;
    if (offsets[bounds[g + 1]] - offsets[bounds[g]] > kMaxImbalance * mean) return false;
  }
  return true;
}

}  // namespace

void RunEncoder(const TransformerModel& model, std::span<const int32_t> ids,
                std::span<const int> offsets, Workspace& ws, float* x) {
  const int d = model.config.d_model;
  const int rows = static_cast<int>(ids.size());
  const int num_sentences = static_cast<int>(offsets.size()) - 1;
  if (num_sentences <= 0 || rows == 0) return;
  int max_length = 0;
  int max_inner = 0;
  for (int s = 0; s < num_sentences; ++s) {
    max_length = std::max(max_length, offsets[s + 1] - offsets[s]);
  }
  for (const EncoderLayerWeights& layer : model.encoder_layers) {
    max_inner = std::max(max_inner, layer.ffn.inner.out);
  }
  ThreadPool* pool = ws.pool();
  const int threads = pool != nullptr ? pool->num_threads() : 1;

  EncoderPass pass;
  pass.model = &model;
  pass.ids = ids;
  pass.offsets = offsets;
  pass.x = x;
  pass.normed = ws.Get(kNormed, static_cast<size_t>(rows) * d);
  pass.qkv = ws.Get(kQkv, static_cast<size_t>(rows) * 3 * d);
  pass.context = ws.Get(kContext, static_cast<size_t>(rows) * d);
  pass.projected = ws.Get(kProjected, static_cast<size_t>(rows) * d);
  pass.inner = ws.Get(kFfnInner, static_cast<size_t>(rows) * std::max(max_inner, 1));
  pass.scratch_floats = AttendBlockScratchFloats(max_length, max_length, ShapeOf(model));
  pass.scratch = ws.Get(kScores, static_cast<size_t>(threads) * pass.scratch_floats);

  // A batch that splits evenly into one group of sentences per thread is encoded group by group,
  // each group on one thread from start to end: one hand-off per batch instead of several per
  // layer, and the element-wise work and the packing of GEMM inputs run in parallel too. Rows
  // are computed the same way either way, so a sentence's states do not depend on its batch.
  std::vector<int> bounds;
  if (threads > 1 && SplitSentences(offsets, threads, bounds)) {
    pool->ParallelFor(threads, [&](int begin, int end) {
      for (int g = begin; g < end; ++g) EncodeSentences(pass, bounds[g], bounds[g + 1], nullptr, g);
    });
    return;
  }
  EncodeSentences(pass, 0, num_sentences, pool, 0);
}

namespace {

// A layer's cross-attention memory for a source of `length` rows: K^T ([d_model x ldkt]), then V
// ([length x d_model]).
int64_t CrossLayerFloats(int d_model, int length) {
  return static_cast<int64_t>(d_model) * (TransposedKeyStride(length) + length);
}

// Where layer `layer`'s keys and values are inside a sentence's cross-attention memory.
template <typename T>  // float or const float
struct CrossLayer {
  T* kt;
  int ldkt;
  T* values;
};
template <typename T>
CrossLayer<T> CrossLayerAt(T* memory, int layer, int d_model, int length) {
  const int ldkt = TransposedKeyStride(length);
  T* kt = memory + layer * CrossLayerFloats(d_model, length);
  return {kt, ldkt, kt + static_cast<int64_t>(d_model) * ldkt};
}

}  // namespace

int64_t CrossMemoryFloats(const TransformerModel& model, int length) {
  return static_cast<int64_t>(model.decoder_layers.size()) *
         CrossLayerFloats(model.config.d_model, length);
}

void ComputeCrossMemory(const TransformerModel& model, const float* encoder_output,
                        std::span<const int> offsets, std::span<float* const> memories,
                        Workspace& ws) {
  const int d = model.config.d_model;
  const int rows = offsets.back();
  const int num_sentences = static_cast<int>(offsets.size()) - 1;
  float* kv = ws.Get(kCrossKv, static_cast<size_t>(rows) * 2 * d);
  for (size_t l = 0; l < model.decoder_layers.size(); ++l) {
    Linear(model.decoder_layers[l].cross_attention.kv, encoder_output, rows, kv, ws.pool());
    ForRange(ws.pool(), num_sentences, static_cast<int64_t>(rows) * 2 * d, [&](int begin, int end) {
      for (int s = begin; s < end; ++s) {
        const int length = offsets[s + 1] - offsets[s];
        const CrossLayer<float> at = CrossLayerAt(memories[s], static_cast<int>(l), d, length);
        const float* src = kv + static_cast<int64_t>(offsets[s]) * 2 * d;
        TransposeKeys(src, 2 * d, length, d, at.kt, at.ldkt);
        for (int j = 0; j < length; ++j) {
          std::memcpy(at.values + static_cast<int64_t>(j) * d,
                      src + static_cast<int64_t>(j) * 2 * d + d, sizeof(float) * d);
        }
      }
    });
  }
}

void RunDecoderStep(const TransformerModel& model, std::span<const DecoderRow> step_rows,
                    DecoderCache& cache, Workspace& ws, float* logits) {
  const TransformerConfig& config = model.config;
  const int d = config.d_model;
  const int rows = static_cast<int>(step_rows.size());
  const AttentionShape shape = ShapeOf(model);

  ThreadPool* pool = ws.pool();
  float* x = ws.Get(kQuery, static_cast<size_t>(rows) * d);  // the residual stream
  int max_keys = 0;  // of self-attention: the longest history
  for (const DecoderRow& row : step_rows) max_keys = std::max(max_keys, row.step + 1);
  ForRange(pool, rows, static_cast<int64_t>(rows) * d, [&](int begin, int end) {
    for (int r = begin; r < end; ++r) {
      const DecoderRow& row = step_rows[r];
      Embed(model.decoder_embeddings, d, row.token, row.step, x + static_cast<int64_t>(r) * d);
    }
  });
  // Runs of consecutive rows that share a cross-attention memory (the beams of a sentence):
  // run i is rows [runs[i], runs[i+1]).
  std::vector<int> runs;
  int max_source = 0;
  for (int r = 0; r < rows; ++r) {
    if (r == 0 || step_rows[r].cross_memory != step_rows[r - 1].cross_memory) runs.push_back(r);
    max_source = std::max(max_source, step_rows[r].source_length);
  }
  const int num_runs = static_cast<int>(runs.size());
  runs.push_back(rows);
  const int64_t cross_scratch_floats = AttendTransposedScratchFloats(std::max(max_source, 1));
  float* cross_scratch =
      ws.Get(kCrossScratch, static_cast<size_t>(num_runs) * cross_scratch_floats);
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
    Linear(self.qkv, SublayerInput(config, self.norm, x, rows, normed, pool), rows, qkv, pool);
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
    Linear(self.output, context, rows, projected, pool);
    Residual(config, self.norm, projected, rows, x, pool);

    // Encoder-decoder attention over the sentence's precomputed keys and values.
    const CrossAttentionWeights& cross = layer.cross_attention;
    Linear(cross.query, SublayerInput(config, cross.norm, x, rows, normed, pool), rows, qkv, pool);
    // The beams of a sentence (consecutive rows with the same memory) attend together, so each
    // key is loaded once for all of them.
    auto attend_run = [&](int run) {
      const int begin = runs[run];
      const DecoderRow& row = step_rows[begin];
      const int length = row.source_length;
      const CrossLayer<const float> at =
          CrossLayerAt(row.cross_memory, static_cast<int>(l), d, length);
      AttendTransposed(qkv + static_cast<int64_t>(begin) * d, d, runs[run + 1] - begin, at.kt,
                       at.ldkt, length, at.values, d, shape,
                       cross_scratch + run * cross_scratch_floats,
                       context + static_cast<int64_t>(begin) * d, d);
    };
    ParallelRows(ws, num_runs, attend_run);
    Linear(cross.output, context, rows, projected, pool);
    Residual(config, cross.norm, projected, rows, x, pool);

    FeedForward(config, layer.ffn, rows, x, normed,
                ws.Get(kFfnInner, static_cast<size_t>(rows) * layer.ffn.inner.out), projected,
                pool);
  }
  const float* final_states = x;
  if (model.decoder_final_norm.present()) {
    float* normed = ws.Get(kNormed, static_cast<size_t>(rows) * d);
    ApplyNorm(config, model.decoder_final_norm, x, rows, normed, pool);
    final_states = normed;
  }
  Linear(model.output_projection, final_states, rows, logits, pool);
}

}  // namespace rosetta
