#include "engine/bert_loader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/file_util.h"
#include "engine/hf_weights.h"
#include "engine/safetensors.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

// A positive integer of a JSON config; errors name the file and the key.
absl::StatusOr<int> PositiveInt(const std::string& path, const nlohmann::json& json,
                                const std::string& key, std::optional<int> fallback) {
  if (!json.contains(key) || json[key].is_null()) {
    if (fallback.has_value()) return *fallback;
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing key \"", key, "\""));
  }
  if (!json[key].is_number_integer() || json[key].get<int64_t>() <= 0 ||
      json[key].get<int64_t>() > (1 << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": \"", key, "\" must be a positive integer"));
  }
  return json[key].get<int>();
}

bool BoolOr(const nlohmann::json& json, const std::string& key, bool fallback) {
  if (!json.is_object() || !json.contains(key) || !json[key].is_boolean()) return fallback;
  return json[key].get<bool>();
}

class BertWeightReader {
 public:
  BertWeightReader(const TensorFile& file, TransformerModel& model, std::string prefix)
      : file_(file), model_(model), prefix_(std::move(prefix)) {}

  absl::StatusOr<AlignedVector<float>> Read(const std::string& name,
                                            const std::vector<int64_t>& shape) const {
    const std::string full = prefix_ + name;
    if (!file_.Contains(full)) {
      return absl::NotFoundError(absl::StrCat(file_.path(), ": tensor ", full, " is missing"));
    }
    return file_.ReadFloat(full, shape);
  }

  absl::StatusOr<const float*> Tensor(const std::string& name, const std::vector<int64_t>& shape) {
    ASSIGN_OR_RETURN(AlignedVector<float> values, Read(name, shape));
    return model_.Store(std::move(values));
  }

  absl::StatusOr<LinearWeights> Linear(const std::string& name, int out, int in) {
    LinearWeights w;
    w.out = out;
    w.in = in;
    ASSIGN_OR_RETURN(w.weight, Tensor(name + ".weight", {out, in}));
    ASSIGN_OR_RETURN(w.bias, Tensor(name + ".bias", {out}));
    return w;
  }

  // Query, key and value projections as one [3d x d] layer, rows [Q; K; V].
  absl::StatusOr<LinearWeights> FusedQkv(const std::string& name, int d) {
    AlignedVector<float> weight, bias;
    weight.reserve(3 * static_cast<size_t>(d) * d);
    for (const char* part : {".query", ".key", ".value"}) {
      ASSIGN_OR_RETURN(AlignedVector<float> w, Read(name + part + ".weight", {d, d}));
      ASSIGN_OR_RETURN(AlignedVector<float> b, Read(name + part + ".bias", {d}));
      weight.insert(weight.end(), w.begin(), w.end());
      bias.insert(bias.end(), b.begin(), b.end());
    }
    LinearWeights fused;
    fused.in = d;
    fused.out = 3 * d;
    fused.weight = model_.Store(std::move(weight));
    fused.bias = model_.Store(std::move(bias));
    return fused;
  }

  // Checkpoints converted from TensorFlow name LayerNorm parameters gamma and beta.
  absl::StatusOr<LayerNormWeights> LayerNorm(const std::string& name, int d) {
    const bool tf_names =
        !file_.Contains(prefix_ + name + ".weight") && file_.Contains(prefix_ + name + ".gamma");
    LayerNormWeights w;
    ASSIGN_OR_RETURN(w.gamma, Tensor(name + (tf_names ? ".gamma" : ".weight"), {d}));
    ASSIGN_OR_RETURN(w.beta, Tensor(name + (tf_names ? ".beta" : ".bias"), {d}));
    return w;
  }

 private:
  const TensorFile& file_;
  TransformerModel& model_;
  const std::string prefix_;
};

struct BertShape {
  int d = 0;
  int layers = 0;
  int ffn = 0;
  int vocab = 0;
  int max_positions = 0;
  int type_vocab = 0;
};

absl::StatusOr<std::shared_ptr<TransformerModel>> LoadBertWeights(const std::string& dir,
                                                                  const std::string& config_path,
                                                                  const nlohmann::json& json,
                                                                  ComputeType compute_type) {
  auto model = std::make_shared<TransformerModel>();
  TransformerConfig& c = model->config;
  BertShape shape;
  ASSIGN_OR_RETURN(shape.d, PositiveInt(config_path, json, "hidden_size", std::nullopt));
  ASSIGN_OR_RETURN(shape.layers, PositiveInt(config_path, json, "num_hidden_layers", std::nullopt));
  ASSIGN_OR_RETURN(c.num_heads,
                   PositiveInt(config_path, json, "num_attention_heads", std::nullopt));
  ASSIGN_OR_RETURN(shape.ffn, PositiveInt(config_path, json, "intermediate_size", std::nullopt));
  ASSIGN_OR_RETURN(shape.vocab, PositiveInt(config_path, json, "vocab_size", std::nullopt));
  ASSIGN_OR_RETURN(shape.max_positions,
                   PositiveInt(config_path, json, "max_position_embeddings", 512));
  ASSIGN_OR_RETURN(shape.type_vocab, PositiveInt(config_path, json, "type_vocab_size", 2));
  const int d = c.d_model = shape.d;
  if (d % c.num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": hidden_size ", d,
                                                   " is not a multiple of num_attention_heads ",
                                                   c.num_heads));
  }
  const std::string position_type = json.value("position_embedding_type", "absolute");
  if (position_type != "absolute") {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": position_embedding_type \"",
                                                   position_type,
                                                   "\" is not supported (only \"absolute\")"));
  }
  c.encoder_layers = shape.layers;
  c.decoder_layers = 0;
  c.pre_norm = false;
  ASSIGN_OR_RETURN(c.activation, ParseActivation(json.value("hidden_act", "gelu")));
  c.layer_norm_epsilon = static_cast<float>(json.value("layer_norm_eps", 1e-12));
  c.pad_id = json.value("pad_token_id", 0);
  c.architecture = absl::StrCat("BertModel (Hugging Face), ", shape.layers, " layers, hidden ", d,
                                ", ", c.num_heads, " heads, FFN ", shape.ffn);

  // model.safetensors, sharded safetensors or pytorch_model.bin, whichever the directory holds.
  ASSIGN_OR_RETURN(std::unique_ptr<TensorFile> file, ReadHuggingFaceWeights(dir));
  // BertModel saves its tensors unprefixed; the task models (BertForMaskedLM, ...) under "bert.".
  std::string prefix;
  for (const char* candidate : {"", "bert."}) {
    if (file->Contains(absl::StrCat(candidate, "embeddings.word_embeddings.weight"))) {
      prefix = candidate;
    }
  }
  for (const auto& [name, tensor] : file->tensors()) {
    if (tensor.dtype != DType::kFloat32) c.weight_type = std::string(DTypeName(tensor.dtype));
  }
  BertWeightReader r(*file, *model, prefix);

  EmbeddingWeights& e = model->encoder_embeddings;
  e.vocab_size = shape.vocab;
  e.max_positions = shape.max_positions;
  ASSIGN_OR_RETURN(e.table, r.Tensor("embeddings.word_embeddings.weight", {shape.vocab, d}));
  ASSIGN_OR_RETURN(AlignedVector<float> positions,
                   r.Read("embeddings.position_embeddings.weight", {shape.max_positions, d}));
  // Every token of a single text is segment 0: its type embedding joins the position table.
  ASSIGN_OR_RETURN(AlignedVector<float> types,
                   r.Read("embeddings.token_type_embeddings.weight", {shape.type_vocab, d}));
  for (int p = 0; p < shape.max_positions; ++p) {
    for (int j = 0; j < d; ++j) positions[static_cast<size_t>(p) * d + j] += types[j];
  }
  e.positions = model->Store(std::move(positions));
  ASSIGN_OR_RETURN(e.norm, r.LayerNorm("embeddings.LayerNorm", d));

  for (int i = 0; i < shape.layers; ++i) {
    const std::string p = absl::StrCat("encoder.layer.", i);
    EncoderLayerWeights layer;
    ASSIGN_OR_RETURN(layer.self_attention.qkv, r.FusedQkv(p + ".attention.self", d));
    ASSIGN_OR_RETURN(layer.self_attention.output, r.Linear(p + ".attention.output.dense", d, d));
    ASSIGN_OR_RETURN(layer.self_attention.norm, r.LayerNorm(p + ".attention.output.LayerNorm", d));
    ASSIGN_OR_RETURN(layer.ffn.inner, r.Linear(p + ".intermediate.dense", shape.ffn, d));
    ASSIGN_OR_RETURN(layer.ffn.outer, r.Linear(p + ".output.dense", d, shape.ffn));
    ASSIGN_OR_RETURN(layer.ffn.norm, r.LayerNorm(p + ".output.LayerNorm", d));
    PackEncoderLayer(*model, layer, compute_type);
    model->encoder_layers.push_back(layer);
  }
  return model;
}

// sentence-transformers modules: the Transformer (this directory), Pooling, Normalize.
absl::Status ReadSentenceTransformersModules(const std::string& dir, BertDirectory& out) {
  const std::string modules_path = JoinPath(dir, "modules.json");
  out.pooling = Pooling::kMean;
  out.normalize = false;
  if (!FileExists(modules_path)) {
    out.pooling_description =
        "mean of the final states over the text's tokens (default: no sentence-transformers "
        "modules.json)";
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(nlohmann::json modules, ReadJsonFile(modules_path));
  if (!modules.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(modules_path, ": expected a JSON array"));
  }
  bool has_pooling = false;
  for (const nlohmann::json& module : modules) {
    const std::string type = module.is_object() ? module.value("type", "") : "";
    const std::string path = module.is_object() ? module.value("path", "") : "";
    if (type == "sentence_transformers.models.Transformer") continue;
    if (type == "sentence_transformers.models.Normalize") {
      out.normalize = true;
      continue;
    }
    if (type != "sentence_transformers.models.Pooling") {
      return absl::InvalidArgumentError(
          absl::StrCat(modules_path, ": module type \"", type,
                       "\" is not supported (supported: Transformer, Pooling, Normalize)"));
    }
    const std::string pooling_path = JoinPath(JoinPath(dir, path), "config.json");
    ASSIGN_OR_RETURN(nlohmann::json pooling, ReadJsonFile(pooling_path));
    std::vector<std::string> modes;
    for (const auto& [key, value] : pooling.items()) {
      if (key.rfind("pooling_mode_", 0) == 0 && value.is_boolean() && value.get<bool>()) {
        modes.push_back(key);
      }
    }
    if (modes.size() != 1 ||
        (modes[0] != "pooling_mode_cls_token" && modes[0] != "pooling_mode_mean_tokens" &&
         modes[0] != "pooling_mode_max_tokens")) {
      return absl::InvalidArgumentError(absl::StrCat(
          pooling_path, ": pooling modes [", absl::StrJoin(modes, ", "),
          "] are not supported (exactly one of pooling_mode_cls_token, pooling_mode_mean_tokens, "
          "pooling_mode_max_tokens)"));
    }
    has_pooling = true;
    if (modes[0] == "pooling_mode_cls_token") {
      out.pooling = Pooling::kCls;
      out.pooling_description = "final state of [CLS] (sentence-transformers Pooling)";
    } else if (modes[0] == "pooling_mode_mean_tokens") {
      out.pooling = Pooling::kMean;
      out.pooling_description =
          "mean of the final states over the text's tokens (sentence-transformers Pooling)";
    } else {
      out.pooling = Pooling::kMax;
      out.pooling_description =
          "maximum of the final states over the text's tokens (sentence-transformers Pooling)";
    }
  }
  if (!has_pooling) {
    return absl::InvalidArgumentError(absl::StrCat(modules_path, ": no Pooling module"));
  }
  if (out.normalize) absl::StrAppend(&out.pooling_description, ", L2-normalised");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BertDirectory> LoadBertDirectory(const std::string& dir, ComputeType compute_type) {
  RETURN_IF_ERROR(CheckComputeType(compute_type));
  const std::string config_path = JoinPath(dir, "config.json");
  ASSIGN_OR_RETURN(nlohmann::json config, ReadJsonFile(config_path));
  BertDirectory out;
  ASSIGN_OR_RETURN(std::shared_ptr<TransformerModel> model,
                   LoadBertWeights(dir, config_path, config, compute_type));

  // Tokenizer options: tokenizer_config.json, then sentence_bert_config.json (which
  // sentence-transformers applies over it).
  WordPieceOptions options;
  int max_tokens = model->encoder_embeddings.max_positions;
  nlohmann::json tokenizer_config = nlohmann::json::object();
  const std::string tokenizer_config_path = JoinPath(dir, "tokenizer_config.json");
  if (FileExists(tokenizer_config_path)) {
    ASSIGN_OR_RETURN(tokenizer_config, ReadJsonFile(tokenizer_config_path));
  }
  options.lower_case = BoolOr(tokenizer_config, "do_lower_case", true);
  if (tokenizer_config.is_object() && tokenizer_config.contains("strip_accents") &&
      tokenizer_config["strip_accents"].is_boolean()) {
    options.strip_accents = tokenizer_config["strip_accents"].get<bool>();
  }
  options.tokenize_chinese_chars = BoolOr(tokenizer_config, "tokenize_chinese_chars", true);
  // model_max_length is a huge sentinel (1e30) when the tokenizer has no limit of its own.
  if (tokenizer_config.is_object() && tokenizer_config.contains("model_max_length") &&
      tokenizer_config["model_max_length"].is_number()) {
    const double limit = tokenizer_config["model_max_length"].get<double>();
    if (limit >= 2 && limit < max_tokens) max_tokens = static_cast<int>(limit);
  }
  const std::string st_config_path = JoinPath(dir, "sentence_bert_config.json");
  if (FileExists(st_config_path)) {
    ASSIGN_OR_RETURN(nlohmann::json st_config, ReadJsonFile(st_config_path));
    // sentence-transformers lower-cases the text itself on top of the tokenizer's own rules.
    if (BoolOr(st_config, "do_lower_case", false) && !options.lower_case) {
      options.lower_case = true;
      options.strip_accents = options.strip_accents.value_or(false);
    }
    if (st_config.is_object() && st_config.contains("max_seq_length") &&
        st_config["max_seq_length"].is_number_integer()) {
      const int limit = st_config["max_seq_length"].get<int>();
      if (limit >= 2 && limit < max_tokens) max_tokens = limit;
    }
  }
  const std::string vocab_path = JoinPath(dir, "vocab.txt");
  ASSIGN_OR_RETURN(Vocabulary vocabulary, Vocabulary::FromTextFile(vocab_path));
  if (vocabulary.size() != model->encoder_embeddings.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(vocab_path, ": has ", vocabulary.size(),
                                                   " pieces but config.json says vocab_size ",
                                                   model->encoder_embeddings.vocab_size));
  }
  ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer,
                   WordPieceTokenizer::Create(std::move(vocabulary), options, vocab_path));
  out.tokenizer = std::make_unique<WordPieceTokenizer>(std::move(tokenizer));
  out.max_tokens = max_tokens;
  RETURN_IF_ERROR(ReadSentenceTransformersModules(dir, out));
  PackEncoderWeights(*model, compute_type);
  CompactWeights(*model);
  out.encoder = std::move(model);
  return out;
}

}  // namespace rosetta
