// The weights and hyper-parameters of a Transformer encoder-decoder, independent of the file
// format they came from. Loaders (ct2_loader, marian_loader) build a TransformerModel; the forward
// pass (transformer.h) reads it. Immutable once built: share it as std::shared_ptr<const ...>.
#ifndef ROSETTA_ENGINE_TRANSFORMER_WEIGHTS_H_
#define ROSETTA_ENGINE_TRANSFORMER_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/aligned_vector.h"
#include "engine/ops.h"
#include "engine/packed_gemm.h"

namespace rosetta {

// y = x W^T + b, with W stored [out x in] row-major (the layout of PyTorch and CTranslate2).
struct LinearWeights {
  const float* weight = nullptr;
  const float* bias = nullptr;  // null when the layer has no bias
  int in = 0;
  int out = 0;
  // The same weights packed for the AVX-512 kernel, which then serves every row count (null when
  // not packed: CPUs without AVX-512 multiply `weight` with OpenBLAS). `weight` and `bias` are null
  // once the loader freed them (PackEncoderLayer, PackDecoderLayer, CompactWeights).
  const PackedWeights* packed = nullptr;
};

struct LayerNormWeights {
  const float* gamma = nullptr;
  const float* beta = nullptr;
  bool present() const { return gamma != nullptr; }
};

// Self-attention with fused Q, K, V projections: qkv.out == 3 * d_model, rows [Q; K; V].
// `norm` is applied to the sub-layer's input (pre-norm) or after the residual (post-norm).
struct SelfAttentionWeights {
  LayerNormWeights norm;
  LinearWeights qkv;
  LinearWeights output;
};

// Encoder-decoder attention: queries from the decoder, fused K, V (kv.out == 2 * d_model) from the
// encoder's output, computed once per source sentence.
struct CrossAttentionWeights {
  LayerNormWeights norm;
  LinearWeights query;
  LinearWeights kv;
  LinearWeights output;
};

struct FeedForwardWeights {
  LayerNormWeights norm;
  LinearWeights inner;  // d_model -> ffn_dim, followed by the activation
  LinearWeights outer;  // ffn_dim -> d_model
};

struct EncoderLayerWeights {
  SelfAttentionWeights self_attention;
  FeedForwardWeights ffn;
};

struct DecoderLayerWeights {
  SelfAttentionWeights self_attention;
  CrossAttentionWeights cross_attention;
  FeedForwardWeights ffn;
};

// Token embeddings plus absolute positions: x = table[id] * scale + positions[position], then
// LayerNorm(x) when `norm` is present (BERT's embedding LayerNorm; absent in translation models).
struct EmbeddingWeights {
  const float* table = nullptr;  // [vocab_size x d_model]
  int vocab_size = 0;
  float scale = 1.0f;
  const float* positions = nullptr;  // [max_positions x d_model]; null when the model has none
  int max_positions = 0;
  LayerNormWeights norm;  // encoder embeddings only
};

struct TransformerConfig {
  int d_model = 0;
  int num_heads = 0;
  int encoder_layers = 0;
  int decoder_layers = 0;
  bool pre_norm = false;
  Activation activation = Activation::kRelu;
  float layer_norm_epsilon = 1e-5f;
  // Decoding conventions of the checkpoint.
  int decoder_start_id = 0;
  int eos_id = 0;
  int pad_id = -1;                  // -1 when the vocabulary has no padding token
  std::vector<int> suppressed_ids;  // never generated (Marian bans its padding token)
  // Free-form description for logs and model info, e.g. "TransformerBase (CTranslate2 v2)".
  std::string architecture;
  std::string weight_type = "float32";  // how the weights were stored on disk
  // How the packed linear layers multiply (set by PackEncoderWeights and PackDecoderWeights).
  ComputeType compute_type = ComputeType::kFloat32;
};

struct TransformerModel {
  TransformerConfig config;

  EmbeddingWeights encoder_embeddings;
  std::vector<EncoderLayerWeights> encoder_layers;
  LayerNormWeights encoder_final_norm;  // pre-norm models only

  EmbeddingWeights decoder_embeddings;
  std::vector<DecoderLayerWeights> decoder_layers;
  LayerNormWeights decoder_final_norm;  // pre-norm models only
  LinearWeights output_projection;      // d_model -> target vocabulary, may share the embeddings

  // Owns every buffer the pointers above refer to.
  std::vector<std::unique_ptr<AlignedVector<float>>> storage;
  std::vector<std::unique_ptr<PackedWeights>> packed_storage;

  const float* Store(AlignedVector<float> values) {
    storage.push_back(std::make_unique<AlignedVector<float>>(std::move(values)));
    return storage.back()->data();
  }

  int head_dim() const { return config.d_model / config.num_heads; }
  int source_vocab_size() const { return encoder_embeddings.vocab_size; }
  int target_vocab_size() const { return output_projection.out; }
};

// Packs the weights of every linear layer of the decoder, the output projection included
// (PackedGemmSupported() CPUs only); layers already packed stay as they are.
// Loaders call it once the model is complete. The packed kernel then serves every row count, in
// `type`: one kernel whatever the batch, so that a sentence's result does not depend on what it
// is batched with (and from 320 to 1,024 rows it is 1.03x-1.2x OpenBLAS's speed on one thread
// here: bench/gemm_bench). REQUIRES: CheckComputeType(type).ok().
void PackDecoderWeights(TransformerModel& model, ComputeType type = ComputeType::kFloat32);
// The same for the layers that run over source tokens: the encoder layers and the decoder's
// cross-attention key/value projections. Sources often arrive alone or in small groups (a
// 32-token text is 32 rows; the daemon admits a few sentences between two decoding steps), where
// OpenBLAS would repack the weights on each call.
void PackEncoderWeights(TransformerModel& model, ComputeType type = ComputeType::kFloat32);
// Packs one layer read by a loader, not yet in `model`, as PackEncoderWeights and
// PackDecoderWeights would, and frees at once its weights as loaded, unless something in `model`
// points into them. Loaders call these as they read each layer, so that all of a model's linear
// layers are never held in float32 at once (transformer-base in int8: about half the peak while
// loading). Pack*Weights leave layers packed here as they are.
void PackEncoderLayer(TransformerModel& model, EncoderLayerWeights& layer, ComputeType type);
void PackDecoderLayer(TransformerModel& model, DecoderLayerWeights& layer, ComputeType type);
// Frees what the model holds twice; loaders call it once the model is packed:
// - the weights as loaded of every packed linear layer; their `weight` and `bias` become null;
// - a decoder embedding table equal to the encoder's, and an output projection equal to the
//   decoder embeddings (tied embeddings stored under several names), which then share one table;
//   likewise a decoder position table equal to the encoder's (sinusoidal positions);
// - any stored buffer nothing points into.
void CompactWeights(TransformerModel& model);
// Bytes of weights the model holds: as loaded (storage) plus packed copies (packed_storage).
int64_t WeightBytes(const TransformerModel& model);

// Layouts of sinusoidal position tables found in checkpoints.
enum class SinusoidalLayout {
  // [sin | cos] halves, inverse timescales exp(-i * log(10000) / (d/2 - 1)): tensor2tensor,
  // OpenNMT-tf and CTranslate2.
  kTensor2Tensor,
  // [sin | cos] halves, inverse timescales 10000^(-2i/d): Hugging Face Marian.
  kMarian,
  // sin and cos interleaved (even columns sin, odd cos), 10000^(-2i/d): the layout of the
  // "Attention Is All You Need" reference code and OpenNMT-py.
  kInterleaved,
};

// A [max_positions x dim] table whose row p encodes the time value p + first_time (CTranslate2
// encodes position p as time p + 1; Hugging Face Marian as time p). REQUIRES: dim even.
AlignedVector<float> MakeSinusoidalTable(int max_positions, int dim, SinusoidalLayout layout,
                                         int first_time);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_TRANSFORMER_WEIGHTS_H_
