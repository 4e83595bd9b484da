#include "engine/marian_loader.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/file_util.h"
#include "engine/hf_weights.h"
#include "engine/sentencepiece_codec.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

// Reads config.json values with errors that name the file and the key.
class ConfigReader {
 public:
  ConfigReader(std::string path, const nlohmann::json& json)
      : path_(std::move(path)), json_(json) {}

  absl::StatusOr<int> Int(const std::string& key) const {
    if (!json_.contains(key))
      return absl::InvalidArgumentError(absl::StrCat(path_, ": missing key \"", key, "\""));
    return IntOr(key, 0);
  }
  absl::StatusOr<int> IntOr(const std::string& key, int fallback) const {
    if (!json_.contains(key) || json_[key].is_null()) return fallback;
    if (!json_[key].is_number_integer() || json_[key].get<int64_t>() < 0 ||
        json_[key].get<int64_t>() > (1 << 30)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": \"", key, "\" must be a non-negative integer"));
    }
    return json_[key].get<int>();
  }
  bool BoolOr(const std::string& key, bool fallback) const {
    if (!json_.contains(key) || !json_[key].is_boolean()) return fallback;
    return json_[key].get<bool>();
  }
  std::string StringOr(const std::string& key, const std::string& fallback) const {
    if (!json_.contains(key) || !json_[key].is_string()) return fallback;
    return json_[key].get<std::string>();
  }

 private:
  std::string path_;
  const nlohmann::json& json_;
};

class MarianWeightReader {
 public:
  MarianWeightReader(const TensorFile& file, TransformerModel& model)
      : file_(file), model_(model) {}

  bool Has(const std::string& name) const { return file_.Contains(name); }

  // The first of `names` that exists (tied weights are stored under one name only).
  absl::StatusOr<std::string> FirstOf(std::initializer_list<std::string> names) const {
    for (const std::string& name : names) {
      if (Has(name)) return name;
    }
    return absl::NotFoundError(
        absl::StrCat(file_.path(), ": tensor ", *names.begin(), " is missing (also looked for: ",
                     absl::StrJoin(names.begin() + 1, names.end(), ", "), ")"));
  }

  absl::StatusOr<AlignedVector<float>> Read(const std::string& name,
                                            std::vector<int64_t> shape) const {
    return file_.ReadFloat(name, shape);
  }

  absl::StatusOr<const float*> Tensor(const std::string& name, std::vector<int64_t> shape) {
    ASSIGN_OR_RETURN(AlignedVector<float> values, Read(name, shape));
    return model_.Store(std::move(values));
  }

  absl::StatusOr<LinearWeights> Linear(const std::string& prefix, int out, int in) {
    LinearWeights w;
    w.out = out;
    w.in = in;
    ASSIGN_OR_RETURN(w.weight, Tensor(prefix + ".weight", {out, in}));
    ASSIGN_OR_RETURN(w.bias, Tensor(prefix + ".bias", {out}));
    return w;
  }

  // Concatenates the rows of several projections of the same input into one linear layer.
  absl::StatusOr<LinearWeights> Fused(const std::vector<std::string>& prefixes, int out_each,
                                      int in) {
    AlignedVector<float> weight;
    AlignedVector<float> bias;
    weight.reserve(prefixes.size() * out_each * static_cast<size_t>(in));
    for (const std::string& prefix : prefixes) {
      ASSIGN_OR_RETURN(AlignedVector<float> w, Read(prefix + ".weight", {out_each, in}));
      ASSIGN_OR_RETURN(AlignedVector<float> b, Read(prefix + ".bias", {out_each}));
      weight.insert(weight.end(), w.begin(), w.end());
      bias.insert(bias.end(), b.begin(), b.end());
    }
    LinearWeights fused;
    fused.out = out_each * static_cast<int>(prefixes.size());
    fused.in = in;
    fused.weight = model_.Store(std::move(weight));
    fused.bias = model_.Store(std::move(bias));
    return fused;
  }

  absl::StatusOr<LayerNormWeights> LayerNorm(const std::string& prefix, int dim) {
    LayerNormWeights w;
    ASSIGN_OR_RETURN(w.gamma, Tensor(prefix + ".weight", {dim}));
    ASSIGN_OR_RETURN(w.beta, Tensor(prefix + ".bias", {dim}));
    return w;
  }

  const TensorFile& file() const { return file_; }

 private:
  const TensorFile& file_;
  TransformerModel& model_;
};

struct MarianShape {
  int d_model = 0;
  int encoder_ffn = 0;
  int decoder_ffn = 0;
  int source_vocab = 0;
  int target_vocab = 0;
  int max_positions = 0;
};

absl::StatusOr<FeedForwardWeights> ReadFeedForward(MarianWeightReader& r, const std::string& prefix,
                                                   int d, int ffn) {
  FeedForwardWeights w;
  ASSIGN_OR_RETURN(w.norm, r.LayerNorm(prefix + ".final_layer_norm", d));
  ASSIGN_OR_RETURN(w.inner, r.Linear(prefix + ".fc1", ffn, d));
  ASSIGN_OR_RETURN(w.outer, r.Linear(prefix + ".fc2", d, ffn));
  return w;
}

absl::StatusOr<EmbeddingWeights> ReadEmbeddings(MarianWeightReader& r, TransformerModel& model,
                                                const std::string& side, int vocab,
                                                const MarianShape& shape, bool scale) {
  const int d = shape.d_model;
  EmbeddingWeights e;
  e.vocab_size = vocab;
  e.scale = scale ? std::sqrt(static_cast<float>(d)) : 1.0f;
  ASSIGN_OR_RETURN(
      std::string name,
      r.FirstOf({absl::StrCat("model.", side, ".embed_tokens.weight"), "model.shared.weight"}));
  ASSIGN_OR_RETURN(e.table, r.Tensor(name, {vocab, d}));
  e.max_positions = shape.max_positions;
  const std::string positions = absl::StrCat("model.", side, ".embed_positions.weight");
  if (r.Has(positions)) {
    ASSIGN_OR_RETURN(e.positions, r.Tensor(positions, {shape.max_positions, d}));
  } else {
    e.positions = model.Store(
        MakeSinusoidalTable(shape.max_positions, d, SinusoidalLayout::kMarian, /*first_time=*/0));
  }
  return e;
}

absl::Status CheckNoUnsupportedKeys(const std::string& path, const nlohmann::json& config) {
  if (config.value("normalize_before", false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": normalize_before (pre-norm) Marian models are not supported"));
  }
  if (config.value("normalize_embedding", false) || config.value("layernorm_embedding", false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": embedding layer norms are not supported"));
  }
  if (config.value("separate_vocabs", false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": separate_vocabs is not supported (only a joint vocab.json)"));
  }
  return absl::OkStatus();
}

}  // namespace

bool LooksLikeMarianDirectory(const std::string& dir) {
  const std::string path = JoinPath(dir, "config.json");
  if (!FileExists(path)) return false;
  absl::StatusOr<nlohmann::json> config = ReadJsonFile(path);
  return config.ok() && config->is_object() && config->value("model_type", "") == "marian";
}

absl::StatusOr<std::unique_ptr<TranslationModel>> LoadMarianModel(const std::string& dir,
                                                                  ComputeType compute_type) {
  RETURN_IF_ERROR(CheckComputeType(compute_type));
  const std::string config_path = JoinPath(dir, "config.json");
  ASSIGN_OR_RETURN(nlohmann::json json, ReadJsonFile(config_path));
  if (!json.is_object() || json.value("model_type", "") != "marian") {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": model_type must be \"marian\", got \"",
                     json.is_object() ? json.value("model_type", "") : "", "\""));
  }
  RETURN_IF_ERROR(CheckNoUnsupportedKeys(config_path, json));
  ConfigReader config(config_path, json);

  auto model = std::make_shared<TransformerModel>();
  TransformerConfig& c = model->config;
  c.architecture = "MarianMTModel (Hugging Face)";
  MarianShape shape;
  ASSIGN_OR_RETURN(shape.d_model, config.Int("d_model"));
  ASSIGN_OR_RETURN(c.encoder_layers, config.Int("encoder_layers"));
  ASSIGN_OR_RETURN(c.decoder_layers, config.Int("decoder_layers"));
  ASSIGN_OR_RETURN(c.num_heads, config.Int("encoder_attention_heads"));
  ASSIGN_OR_RETURN(int decoder_heads, config.IntOr("decoder_attention_heads", c.num_heads));
  ASSIGN_OR_RETURN(shape.encoder_ffn, config.Int("encoder_ffn_dim"));
  ASSIGN_OR_RETURN(shape.decoder_ffn, config.IntOr("decoder_ffn_dim", shape.encoder_ffn));
  ASSIGN_OR_RETURN(shape.source_vocab, config.Int("vocab_size"));
  ASSIGN_OR_RETURN(shape.target_vocab, config.IntOr("decoder_vocab_size", shape.source_vocab));
  ASSIGN_OR_RETURN(shape.max_positions, config.IntOr("max_position_embeddings", 512));
  const int d = c.d_model = shape.d_model;
  if (d == 0 || c.num_heads == 0 || d % c.num_heads != 0 || decoder_heads != c.num_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": d_model ", d, " must be a multiple of ",
                     "the attention heads (", c.num_heads, ", ", decoder_heads, ")"));
  }
  if (c.encoder_layers == 0 || c.decoder_layers == 0 || shape.encoder_ffn == 0 ||
      shape.decoder_ffn == 0 || shape.source_vocab == 0 || shape.target_vocab == 0 ||
      shape.max_positions == 0) {
    return absl::InvalidArgumentError(absl::StrCat(config_path,
                                                   ": layer counts, FFN sizes, vocabulary sizes "
                                                   "and max_position_embeddings must be positive"));
  }
  c.pre_norm = false;
  ASSIGN_OR_RETURN(c.activation, ParseActivation(config.StringOr("activation_function", "swish")));
  c.layer_norm_epsilon = 1e-5f;  // nn.LayerNorm's default, which MarianMT uses
  ASSIGN_OR_RETURN(c.eos_id, config.IntOr("eos_token_id", 0));
  ASSIGN_OR_RETURN(c.pad_id, config.IntOr("pad_token_id", shape.target_vocab - 1));
  ASSIGN_OR_RETURN(c.decoder_start_id, config.IntOr("decoder_start_token_id", c.pad_id));
  for (int id : {c.eos_id, c.pad_id, c.decoder_start_id}) {
    if (id >= shape.target_vocab) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": special token id ", id,
                                                     " is outside the target vocabulary of ",
                                                     shape.target_vocab));
    }
  }
  // MarianMT never generates its padding token (bad_words_ids = [[pad_token_id]]).
  c.suppressed_ids = {c.pad_id};

  ASSIGN_OR_RETURN(std::unique_ptr<TensorFile> file, ReadHuggingFaceWeights(dir));
  MarianWeightReader r(*file, *model);
  const bool scale = config.BoolOr("scale_embedding", true);

  ASSIGN_OR_RETURN(model->encoder_embeddings,
                   ReadEmbeddings(r, *model, "encoder", shape.source_vocab, shape, scale));
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string p = absl::StrCat("model.encoder.layers.", i);
    EncoderLayerWeights layer;
    ASSIGN_OR_RETURN(
        layer.self_attention.qkv,
        r.Fused({p + ".self_attn.q_proj", p + ".self_attn.k_proj", p + ".self_attn.v_proj"}, d, d));
    ASSIGN_OR_RETURN(layer.self_attention.output, r.Linear(p + ".self_attn.out_proj", d, d));
    ASSIGN_OR_RETURN(layer.self_attention.norm, r.LayerNorm(p + ".self_attn_layer_norm", d));
    ASSIGN_OR_RETURN(layer.ffn, ReadFeedForward(r, p, d, shape.encoder_ffn));
    PackEncoderLayer(*model, layer, compute_type);
    model->encoder_layers.push_back(layer);
  }

  ASSIGN_OR_RETURN(model->decoder_embeddings,
                   ReadEmbeddings(r, *model, "decoder", shape.target_vocab, shape, scale));
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string p = absl::StrCat("model.decoder.layers.", i);
    DecoderLayerWeights layer;
    ASSIGN_OR_RETURN(
        layer.self_attention.qkv,
        r.Fused({p + ".self_attn.q_proj", p + ".self_attn.k_proj", p + ".self_attn.v_proj"}, d, d));
    ASSIGN_OR_RETURN(layer.self_attention.output, r.Linear(p + ".self_attn.out_proj", d, d));
    ASSIGN_OR_RETURN(layer.self_attention.norm, r.LayerNorm(p + ".self_attn_layer_norm", d));
    ASSIGN_OR_RETURN(layer.cross_attention.query, r.Linear(p + ".encoder_attn.q_proj", d, d));
    ASSIGN_OR_RETURN(layer.cross_attention.kv,
                     r.Fused({p + ".encoder_attn.k_proj", p + ".encoder_attn.v_proj"}, d, d));
    ASSIGN_OR_RETURN(layer.cross_attention.output, r.Linear(p + ".encoder_attn.out_proj", d, d));
    ASSIGN_OR_RETURN(layer.cross_attention.norm, r.LayerNorm(p + ".encoder_attn_layer_norm", d));
    ASSIGN_OR_RETURN(layer.ffn, ReadFeedForward(r, p, d, shape.decoder_ffn));
    PackDecoderLayer(*model, layer, compute_type);
    model->decoder_layers.push_back(layer);
  }

  // lm_head is tied to the decoder embeddings unless stored on its own.
  LinearWeights& projection = model->output_projection;
  projection.in = d;
  projection.out = shape.target_vocab;
  if (r.Has("lm_head.weight")) {
    ASSIGN_OR_RETURN(projection.weight, r.Tensor("lm_head.weight", {shape.target_vocab, d}));
  } else if (config.BoolOr("tie_word_embeddings", true)) {
    projection.weight = model->decoder_embeddings.table;
  } else {
    return absl::NotFoundError(absl::StrCat(file->path(), ": tensor lm_head.weight is missing"));
  }
  if (r.Has("final_logits_bias")) {
    ASSIGN_OR_RETURN(AlignedVector<float> bias,
                     r.Read("final_logits_bias", {1, shape.target_vocab}));
    projection.bias = model->Store(std::move(bias));
  }

  auto result = std::make_unique<TranslationModel>();
  result->path = dir;
  result->format = "marian";
  ASSIGN_OR_RETURN(result->source_vocabulary, Vocabulary::FromJsonMap(JoinPath(dir, "vocab.json")));
  if (result->source_vocabulary.size() != shape.source_vocab ||
      result->source_vocabulary.size() != shape.target_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat(JoinPath(dir, "vocab.json"), ": has ", result->source_vocabulary.size(),
                     " tokens but config.json says vocab_size ", shape.source_vocab,
                     " and decoder_vocab_size ", shape.target_vocab));
  }
  result->target_vocabulary = result->source_vocabulary;
  ASSIGN_OR_RETURN(result->codec, SentencePieceCodec::Load(JoinPath(dir, "source.spm"),
                                                           JoinPath(dir, "target.spm")));
  if (auto unk = result->source_vocabulary.Find("<unk>")) result->source_unk_id = *unk;
  result->source_eos_id = c.eos_id;
  result->target_special_ids = {c.eos_id, c.pad_id, c.decoder_start_id};
  if (result->source_unk_id >= 0) result->target_special_ids.push_back(result->source_unk_id);

  // Generation defaults: generation_config.json, else config.json (older checkpoints).
  nlohmann::json generation = json;
  const std::string generation_path = JoinPath(dir, "generation_config.json");
  if (FileExists(generation_path)) {
    ASSIGN_OR_RETURN(generation, ReadJsonFile(generation_path));
  }
  ConfigReader gen(generation_path, generation);
  DecodingOptions& defaults = result->default_options;
  ASSIGN_OR_RETURN(defaults.beam_size, gen.IntOr("num_beams", 4));
  defaults.beam_size = std::clamp(defaults.beam_size, 1, 16);
  ASSIGN_OR_RETURN(defaults.max_length, gen.IntOr("max_length", 256));
  defaults.max_length = std::clamp(defaults.max_length, 1, shape.max_positions);
  PackEncoderWeights(*model, compute_type);
  PackDecoderWeights(*model, compute_type);
  CompactWeights(*model);
  result->transformer = std::move(model);
  return result;
}

}  // namespace rosetta
