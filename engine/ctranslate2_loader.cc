#include "engine/ctranslate2_loader.h"

#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/ctranslate2_file.h"
#include "engine/file_util.h"
#include "engine/status_macros.h"

namespace rosetta {

namespace {

// CTranslate2 1.x wrote version 1 files with OpenNMT-tf variable names; map them onto the names of
// later versions ("transformer/encoder/layer_0/multi_head/conv1d/kernel:0" ->
// "encoder/layer_0/self_attention/linear_0/weight").
std::string V1ToV2Name(const std::string& name) {
  std::string n = name;
  if (absl::StartsWith(n, "transformer/")) n = n.substr(strlen("transformer/"));
  if (absl::EndsWith(n, ":0")) n.resize(n.size() - 2);
  const bool decoder = absl::StartsWith(n, "decoder/");
  // One replacement per pass: a match consumes its slashes, so patterns must not share them.
  for (const auto& [from, to] :
       {std::pair{"/w_embs", "/embeddings/weight"},
        std::pair{"decoder/dense/", "decoder/projection/"},
        std::pair{"/masked_multi_head/", "/self_attention/"},
        std::pair{"/LayerNorm/", "/layer_norm/"}, std::pair{"/conv1d_2/", "/linear_2/"},
        std::pair{"/conv1d_1/", "/linear_1/"}, std::pair{"/conv1d/", "/linear_0/"},
        std::pair{"/kernel", "/weight"}}) {
    n = absl::StrReplaceAll(n, {{from, to}});
  }
  // In the encoder "multi_head" is self-attention; in the decoder it is encoder-decoder attention.
  n = absl::StrReplaceAll(n, {{"/multi_head/", decoder ? "/attention/" : "/self_attention/"}});
  return n;
}

// CTranslate2's ActivationType enumeration.
absl::StatusOr<Activation> ActivationFromCt2Id(int id) {
  switch (id) {
    case 0:
      return Activation::kRelu;
    case 1:
      return Activation::kGeluTanh;
    case 2:
      return Activation::kSilu;
    case 3:
      return Activation::kGelu;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported activation id ", id));
}

// Reads weights from a model.bin into a TransformerModel's storage, dequantizing as needed.
class Ct2WeightReader {
 public:
  Ct2WeightReader(const Ct2ModelBin& bin, TransformerModel& model)
      : bin_(bin), file_(*bin.variables), model_(model) {}

  bool Has(const std::string& name) const { return file_.Contains(name); }

  absl::Status Missing(const std::string& name) const {
    return absl::NotFoundError(absl::StrCat(file_.path(), ": tensor ", name, " is missing"));
  }

  // An integer scalar attribute stored as a variable, or `fallback` when absent.
  absl::StatusOr<int> IntAttribute(const std::string& name, int fallback) const {
    const RawTensor* t = file_.Find(name);
    if (t == nullptr) return fallback;
    if (t->num_elements() != 1) return file_.TensorError(name, "expected a scalar");
    switch (t->dtype) {
      case DType::kInt8:
        return static_cast<int>(*reinterpret_cast<const int8_t*>(t->data));
      case DType::kInt16: {
        int16_t v;
        std::memcpy(&v, t->data, 2);
        return v;
      }
      case DType::kInt32: {
        int32_t v;
        std::memcpy(&v, t->data, 4);
        return v;
      }
      case DType::kFloat32: {
        float v;
        std::memcpy(&v, t->data, 4);
        return static_cast<int>(v);
      }
      default:
        return file_.TensorError(name, absl::StrCat("unexpected dtype ", DTypeName(t->dtype)));
    }
  }

  // A float32 tensor of the given shape (float16/bfloat16 widened; int8/int16 dequantized with
  // the `<name>_scale` variable: per-row or scalar, w = q / scale).
  absl::StatusOr<const float*> Tensor(const std::string& name, std::vector<int64_t> shape) {
    const RawTensor* t = file_.Find(name);
    if (t == nullptr) return Missing(name);
    if (t->shape != shape) {
      return file_.TensorError(name, absl::StrCat("has shape ", ShapeString(t->shape),
                                                  ", expected ", ShapeString(shape)));
    }
    if (t->dtype != DType::kInt8 && t->dtype != DType::kInt16) {
      ASSIGN_OR_RETURN(AlignedVector<float> values, file_.ReadFloat(name, shape));
      if (t->dtype != DType::kFloat32) model_.config.weight_type = std::string(DTypeName(t->dtype));
      return model_.Store(std::move(values));
    }
    const int64_t rows = shape.empty() ? 1 : shape[0];
    const int64_t n = t->num_elements();
    const int64_t cols = rows == 0 ? 0 : n / rows;
    AlignedVector<float> scales;
    const std::string scale_name = name + "_scale";
    if (file_.Contains(scale_name)) {
      const RawTensor* s = file_.Find(scale_name);
      if (s->num_elements() != 1 && s->num_elements() != rows) {
        return file_.TensorError(scale_name, absl::StrCat("has shape ", ShapeString(s->shape),
                                                          ", expected [] or [", rows, "]"));
      }
      ASSIGN_OR_RETURN(scales, file_.ReadFloat(scale_name, {}));
    } else if (t->dtype == DType::kInt16 && bin_.version == 1) {
      scales = {kV1Int16Scale};  // version 1 files quantized int16 with a fixed scale
    } else {
      return Missing(scale_name);
    }
    AlignedVector<float> values(n);
    for (int64_t r = 0; r < rows; ++r) {
      const float scale = scales.size() == 1 ? scales[0] : scales[r];
      if (!(scale != 0.0f) || !std::isfinite(scale)) {
        return file_.TensorError(scale_name, absl::StrCat("has an invalid scale ", scale));
      }
      const float inv = 1.0f / scale;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t i = r * cols + c;
        float q;
        if (t->dtype == DType::kInt8) {
          q = static_cast<float>(reinterpret_cast<const int8_t*>(t->data)[i]);
        } else {
          int16_t v;
          std::memcpy(&v, t->data + 2 * i, 2);
          q = static_cast<float>(v);
        }
        values[i] = q * inv;
      }
    }
    model_.config.weight_type = std::string(DTypeName(t->dtype));
    return model_.Store(std::move(values));
  }

  absl::StatusOr<LinearWeights> Linear(const std::string& prefix, int out, int in) {
    LinearWeights w;
    w.out = out;
    w.in = in;
    ASSIGN_OR_RETURN(w.weight, Tensor(prefix + "/weight", {out, in}));
    if (Has(prefix + "/bias")) {
      ASSIGN_OR_RETURN(w.bias, Tensor(prefix + "/bias", {out}));
    }
    return w;
  }

  absl::StatusOr<LayerNormWeights> LayerNorm(const std::string& prefix, int dim) {
    LayerNormWeights w;
    if (!Has(prefix + "/beta")) {
      return file_.TensorError(prefix + "/gamma",
                               "RMSNorm (a layer norm without beta) is not supported");
    }
    ASSIGN_OR_RETURN(w.gamma, Tensor(prefix + "/gamma", {dim}));
    ASSIGN_OR_RETURN(w.beta, Tensor(prefix + "/beta", {dim}));
    return w;
  }

  absl::StatusOr<LayerNormWeights> OptionalLayerNorm(const std::string& prefix, int dim) {
    if (!Has(prefix + "/gamma")) return LayerNormWeights{};
    return LayerNorm(prefix, dim);
  }

  // A string attribute (a 1-D int8 array of UTF-8 bytes), or `fallback` when absent.
  std::string StringAttribute(const std::string& name, const std::string& fallback) const {
    const RawTensor* t = file_.Find(name);
    if (t == nullptr || t->dtype != DType::kInt8 || t->shape.size() != 1) return fallback;
    return std::string(reinterpret_cast<const char*>(t->data), t->num_bytes);
  }

  const TensorFile& file() const { return file_; }

 private:
  static constexpr float kV1Int16Scale = 1000.0f;
  const Ct2ModelBin& bin_;
  const TensorFile& file_;
  TransformerModel& model_;
};

absl::StatusOr<FeedForwardWeights> ReadFeedForward(Ct2WeightReader& r, const std::string& prefix,
                                                   int d) {
  if (r.Has(prefix + "/linear_0_noact/weight")) {
    return r.file().TensorError(prefix + "/linear_0_noact/weight",
                                "gated feed-forward layers (GLU) are not supported");
  }
  const RawTensor* inner = r.file().Find(prefix + "/linear_0/weight");
  if (inner == nullptr) return r.Missing(prefix + "/linear_0/weight");
  if (inner->shape.size() != 2) {
    return r.file().TensorError(prefix + "/linear_0/weight", "expected a matrix");
  }
  const int ffn = static_cast<int>(inner->shape[0]);
  FeedForwardWeights w;
  ASSIGN_OR_RETURN(w.norm, r.LayerNorm(prefix + "/layer_norm", d));
  ASSIGN_OR_RETURN(w.inner, r.Linear(prefix + "/linear_0", ffn, d));
  ASSIGN_OR_RETURN(w.outer, r.Linear(prefix + "/linear_1", d, ffn));
  return w;
}

absl::StatusOr<SelfAttentionWeights> ReadSelfAttention(Ct2WeightReader& r,
                                                       const std::string& prefix, int d) {
  if (r.Has(prefix + "/relative_position_keys") || r.Has(prefix + "/relative_attention_bias")) {
    return r.file().TensorError(prefix, "relative position attention is not supported");
  }
  SelfAttentionWeights w;
  ASSIGN_OR_RETURN(w.norm, r.LayerNorm(prefix + "/layer_norm", d));
  ASSIGN_OR_RETURN(w.qkv, r.Linear(prefix + "/linear_0", 3 * d, d));
  ASSIGN_OR_RETURN(w.output, r.Linear(prefix + "/linear_1", d, d));
  return w;
}

absl::StatusOr<CrossAttentionWeights> ReadCrossAttention(Ct2WeightReader& r,
                                                         const std::string& prefix, int d) {
  CrossAttentionWeights w;
  ASSIGN_OR_RETURN(w.norm, r.LayerNorm(prefix + "/layer_norm", d));
  ASSIGN_OR_RETURN(w.query, r.Linear(prefix + "/linear_0", d, d));
  ASSIGN_OR_RETURN(w.kv, r.Linear(prefix + "/linear_1", 2 * d, d));
  ASSIGN_OR_RETURN(w.output, r.Linear(prefix + "/linear_2", d, d));
  return w;
}

int CountLayers(const Ct2WeightReader& r, const std::string& stack) {
  int n = 0;
  while (r.Has(absl::StrCat(stack, "/layer_", n, "/ffn/linear_0/weight"))) ++n;
  return n;
}

// Maximum positions of computed sinusoidal tables: CTranslate2 itself computes 500 and more on
// demand; 1024 bounds the table's memory and is far above any length served here.
constexpr int kSinusoidalPositions = 1024;

absl::StatusOr<EmbeddingWeights> ReadEmbeddings(Ct2WeightReader& r, TransformerModel& model,
                                                const std::string& stack, int d) {
  std::string name = stack + "/embeddings/weight";
  if (!r.Has(name) && r.Has(stack + "/embeddings_0/weight")) {
    if (r.Has(stack + "/embeddings_1/weight")) {
      return r.file().TensorError(stack + "/embeddings_1/weight",
                                  "multiple source embeddings (source features) are not supported");
    }
    name = stack + "/embeddings_0/weight";
  }
  const RawTensor* t = r.file().Find(name);
  if (t == nullptr) return r.Missing(name);
  if (t->shape.size() != 2 || t->shape[1] != d) {
    return r.file().TensorError(name, absl::StrCat("has shape ", ShapeString(t->shape),
                                                   ", expected [vocabulary, ", d, "]"));
  }
  if (r.Has(stack + "/layernorm_embedding/gamma")) {
    return r.file().TensorError(stack + "/layernorm_embedding/gamma",
                                "a layer norm on the embeddings is not supported");
  }
  EmbeddingWeights e;
  e.vocab_size = static_cast<int>(t->shape[0]);
  ASSIGN_OR_RETURN(e.table, r.Tensor(name, {e.vocab_size, d}));
  // int8 true/false: sqrt(d_model) or nothing; a float32 value: that factor (1.0: nothing).
  std::string scale_name = stack + "/scale_embeddings";
  if (!r.Has(scale_name)) scale_name = stack + "/embeddings/multiply_by_sqrt_depth";
  e.scale = std::sqrt(static_cast<float>(d));
  if (const RawTensor* s = r.file().Find(scale_name); s != nullptr && s->dtype == DType::kFloat32) {
    ASSIGN_OR_RETURN(AlignedVector<float> value, r.file().ReadFloat(scale_name, {}));
    if (value.size() != 1) return r.file().TensorError(scale_name, "expected a scalar");
    e.scale = value[0];
  } else {
    ASSIGN_OR_RETURN(int scale_embeddings, r.IntAttribute(scale_name, 1));
    if (!scale_embeddings) e.scale = 1.0f;
  }
  const std::string positions = stack + "/position_encodings/encodings";
  if (const RawTensor* p = r.file().Find(positions); p != nullptr) {
    if (p->shape.size() != 2 || p->shape[1] != d) {
      return r.file().TensorError(positions, absl::StrCat("has shape ", ShapeString(p->shape),
                                                          ", expected [positions, ", d, "]"));
    }
    e.max_positions = static_cast<int>(p->shape[0]);
    ASSIGN_OR_RETURN(e.positions, r.Tensor(positions, {e.max_positions, d}));
  } else {
    e.max_positions = kSinusoidalPositions;
    e.positions =
        model.Store(MakeSinusoidalTable(e.max_positions, d, SinusoidalLayout::kTensor2Tensor,
                                        /*first_time=*/1));
  }
  return e;
}

// Like CTranslate2, appends the unknown token when the file lacks it (OpenNMT-tf vocabularies
// leave it implicit, as the last id).
absl::StatusOr<Vocabulary> LoadVocabulary(const std::string& dir, const std::string& side,
                                          const std::string& unk) {
  for (const std::string& base : {std::string("shared"), side}) {
    absl::StatusOr<Vocabulary> vocabulary = absl::NotFoundError("");
    if (const std::string json = JoinPath(dir, base + "_vocabulary.json"); FileExists(json)) {
      vocabulary = Vocabulary::FromJsonList(json);
    } else if (const std::string txt = JoinPath(dir, base + "_vocabulary.txt"); FileExists(txt)) {
      vocabulary = Vocabulary::FromTextFile(txt);
    } else {
      continue;
    }
    if (vocabulary.ok() && !vocabulary->Find(unk)) vocabulary->Append(unk);
    return vocabulary;
  }
  return absl::NotFoundError(
      absl::StrCat(dir, ": no ", side, "_vocabulary.{txt,json} or shared_vocabulary.{txt,json}"));
}

// The model conventions of config.json (binary version 6) or of model.bin attributes (before 6).
struct Ct2Conventions {
  std::string unk_token = "<unk>";
  std::string bos_token = "<s>";
  std::string eos_token = "</s>";
  std::optional<std::string> decoder_start_token = "<s>";  // nullopt: supplied by the caller
  bool add_source_bos = false;
  bool add_source_eos = false;
  bool multi_query_attention = false;
  float layer_norm_epsilon = 1e-5f;  // CTranslate2's default for LayerNorms with a beta
};

absl::StatusOr<Ct2Conventions> ParseConfigJson(const std::string& path) {
  Ct2Conventions conventions;
  if (!FileExists(path)) return conventions;
  ASSIGN_OR_RETURN(nlohmann::json json, ReadJsonFile(path));
  if (!json.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  auto wrong_type = [&](const char* key, const char* type) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"", key, "\" must be ", type));
  };
  for (auto [key, field] : {std::pair{"unk_token", &conventions.unk_token},
                            std::pair{"bos_token", &conventions.bos_token},
                            std::pair{"eos_token", &conventions.eos_token}}) {
    if (!json.contains(key)) continue;
    if (!json[key].is_string()) return wrong_type(key, "a string");
    *field = json[key].get<std::string>();
  }
  conventions.decoder_start_token = conventions.bos_token;
  if (json.contains("decoder_start_token")) {
    const auto& start = json["decoder_start_token"];
    if (start.is_null()) {
      conventions.decoder_start_token.reset();
    } else if (start.is_string()) {
      conventions.decoder_start_token = start.get<std::string>();
    } else {
      return wrong_type("decoder_start_token", "a string or null");
    }
  }
  for (auto [key, field] :
       {std::pair{"add_source_bos", &conventions.add_source_bos},
        std::pair{"add_source_eos", &conventions.add_source_eos},
        std::pair{"multi_query_attention", &conventions.multi_query_attention}}) {
    if (!json.contains(key) || json[key].is_null()) continue;
    if (!json[key].is_boolean()) return wrong_type(key, "true or false");
    *field = json[key].get<bool>();
  }
  if (json.contains("layer_norm_epsilon") && !json["layer_norm_epsilon"].is_null()) {
    if (!json["layer_norm_epsilon"].is_number())
      return wrong_type("layer_norm_epsilon", "a number");
    conventions.layer_norm_epsilon = json["layer_norm_epsilon"].get<float>();
  }
  return conventions;
}

// Before binary version 6 the conventions are attributes of model.bin.
absl::StatusOr<Ct2Conventions> ConventionsFromAttributes(const Ct2WeightReader& r) {
  Ct2Conventions conventions;
  ASSIGN_OR_RETURN(int with_source_bos, r.IntAttribute("with_source_bos", 0));
  ASSIGN_OR_RETURN(int with_source_eos, r.IntAttribute("with_source_eos", 0));
  ASSIGN_OR_RETURN(int with_target_bos, r.IntAttribute("with_target_bos", 1));
  ASSIGN_OR_RETURN(int user_start, r.IntAttribute("user_decoder_start_tokens", 0));
  conventions.bos_token = r.StringAttribute("bos_token", "<s>");
  conventions.eos_token = r.StringAttribute("eos_token", "</s>");
  conventions.unk_token = r.StringAttribute("unk_token", "<unk>");
  conventions.add_source_bos = with_source_bos != 0;
  conventions.add_source_eos = with_source_eos != 0;
  if (user_start) {
    conventions.decoder_start_token.reset();
  } else {
    conventions.decoder_start_token =
        with_target_bos ? conventions.bos_token : conventions.eos_token;
  }
  return conventions;
}

// Latest revision of each spec this loader reads (CTranslate2 4.x writes TransformerSpec 7).
int MaxSpecRevision(const std::string& spec) { return spec == "TransformerSpec" ? 7 : 2; }

}  // namespace

bool LooksLikeCt2Directory(const std::string& dir) {
  return FileExists(JoinPath(dir, "model.bin"));
}

absl::StatusOr<std::unique_ptr<TranslationModel>> LoadCt2Model(const std::string& dir,
                                                               ComputeType compute_type) {
  RETURN_IF_ERROR(CheckComputeType(compute_type));
  const std::string bin_path = JoinPath(dir, "model.bin");
  ASSIGN_OR_RETURN(Ct2ModelBin bin, ReadCt2ModelBin(bin_path));
  if (bin.version == 1) bin.variables->RenameAll(V1ToV2Name);

  int default_heads = 0;
  if (bin.spec.empty() || bin.spec == "TransformerBase") {
    default_heads = 8;
  } else if (bin.spec == "TransformerBig") {
    default_heads = 16;
  } else if (bin.spec != "TransformerSpec") {
    return absl::InvalidArgumentError(absl::StrCat(
        bin_path, ": unsupported model spec \"", bin.spec,
        "\" (supported: TransformerBase, TransformerBig, TransformerSpec encoder-decoders)"));
  }
  if (bin.revision > MaxSpecRevision(bin.spec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(bin_path, ": unsupported ", bin.spec, " revision ", bin.revision,
                     " (latest supported: ", MaxSpecRevision(bin.spec), ")"));
  }

  auto model = std::make_shared<TransformerModel>();
  Ct2WeightReader r(bin, *model);
  TransformerConfig& c = model->config;
  c.architecture = absl::StrCat(bin.spec.empty() ? "TransformerBase" : bin.spec,
                                " (CTranslate2 binary version ", bin.version, ")");

  if (!r.Has("encoder/embeddings/weight") && !r.Has("encoder/embeddings_0/weight")) {
    return r.Missing("encoder/embeddings/weight");
  }
  const std::string source_embeddings = r.Has("encoder/embeddings/weight")
                                            ? "encoder/embeddings/weight"
                                            : "encoder/embeddings_0/weight";
  const RawTensor* emb = r.file().Find(source_embeddings);
  if (emb->shape.size() != 2) return r.file().TensorError(source_embeddings, "expected a matrix");
  const int d = static_cast<int>(emb->shape[1]);
  c.d_model = d;
  // Revisions < 5 keep these attributes at the root, later ones under encoder/ and decoder/.
  ASSIGN_OR_RETURN(int root_heads,
                   r.IntAttribute("num_heads", default_heads == 0 ? 8 : default_heads));
  ASSIGN_OR_RETURN(c.num_heads, r.IntAttribute("encoder/num_heads", root_heads));
  ASSIGN_OR_RETURN(int decoder_heads, r.IntAttribute("decoder/num_heads", root_heads));
  if (c.num_heads <= 0 || d % c.num_heads != 0 || decoder_heads != c.num_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(bin_path, ": invalid number of heads ", c.num_heads, " for d_model ", d));
  }
  ASSIGN_OR_RETURN(int root_pre_norm, r.IntAttribute("pre_norm", 1));
  ASSIGN_OR_RETURN(int pre_norm, r.IntAttribute("encoder/pre_norm", root_pre_norm));
  ASSIGN_OR_RETURN(int decoder_pre_norm, r.IntAttribute("decoder/pre_norm", root_pre_norm));
  ASSIGN_OR_RETURN(int root_activation, r.IntAttribute("activation", 0));
  ASSIGN_OR_RETURN(int activation, r.IntAttribute("encoder/activation", root_activation));
  ASSIGN_OR_RETURN(int decoder_activation, r.IntAttribute("decoder/activation", root_activation));
  if (pre_norm != decoder_pre_norm || activation != decoder_activation) {
    return absl::InvalidArgumentError(absl::StrCat(
        bin_path, ": encoder and decoder with different pre_norm or activation are not supported"));
  }
  c.pre_norm = pre_norm != 0;
  ASSIGN_OR_RETURN(c.activation, ActivationFromCt2Id(activation));
  for (const char* unsupported : {"decoder/start_from_zero_embedding", "decoder/scale_outputs",
                                  "decoder/alibi", "decoder/rotary_dim", "encoder/rotary_dim"}) {
    ASSIGN_OR_RETURN(int value, r.IntAttribute(unsupported, 0));
    if (value != 0) {
      return r.file().TensorError(unsupported, "this model feature is not supported");
    }
  }
  Ct2Conventions conventions;
  if (bin.version < 6) {
    ASSIGN_OR_RETURN(conventions, ConventionsFromAttributes(r));
  } else {
    ASSIGN_OR_RETURN(conventions, ParseConfigJson(JoinPath(dir, "config.json")));
  }
  ASSIGN_OR_RETURN(int mqa, r.IntAttribute("encoder/multi_query_attention", 0));
  if (mqa || conventions.multi_query_attention) {
    return absl::InvalidArgumentError(
        absl::StrCat(bin_path, ": multi-query attention is not supported"));
  }
  c.layer_norm_epsilon = conventions.layer_norm_epsilon;

  c.encoder_layers = CountLayers(r, "encoder");
  c.decoder_layers = CountLayers(r, "decoder");
  if (c.encoder_layers == 0) return r.Missing("encoder/layer_0/ffn/linear_0/weight");
  if (c.decoder_layers == 0) return r.Missing("decoder/layer_0/ffn/linear_0/weight");

  ASSIGN_OR_RETURN(model->encoder_embeddings, ReadEmbeddings(r, *model, "encoder", d));
  for (int i = 0; i < c.encoder_layers; ++i) {
    const std::string prefix = absl::StrCat("encoder/layer_", i);
    EncoderLayerWeights layer;
    ASSIGN_OR_RETURN(layer.self_attention, ReadSelfAttention(r, prefix + "/self_attention", d));
    ASSIGN_OR_RETURN(layer.ffn, ReadFeedForward(r, prefix + "/ffn", d));
    PackEncoderLayer(*model, layer, compute_type);
    model->encoder_layers.push_back(layer);
  }
  if (c.pre_norm) {
    ASSIGN_OR_RETURN(model->encoder_final_norm, r.OptionalLayerNorm("encoder/layer_norm", d));
  }

  ASSIGN_OR_RETURN(model->decoder_embeddings, ReadEmbeddings(r, *model, "decoder", d));
  for (int i = 0; i < c.decoder_layers; ++i) {
    const std::string prefix = absl::StrCat("decoder/layer_", i);
    DecoderLayerWeights layer;
    ASSIGN_OR_RETURN(layer.self_attention, ReadSelfAttention(r, prefix + "/self_attention", d));
    ASSIGN_OR_RETURN(layer.cross_attention, ReadCrossAttention(r, prefix + "/attention", d));
    ASSIGN_OR_RETURN(layer.ffn, ReadFeedForward(r, prefix + "/ffn", d));
    PackDecoderLayer(*model, layer, compute_type);
    model->decoder_layers.push_back(layer);
  }
  if (c.pre_norm) {
    ASSIGN_OR_RETURN(model->decoder_final_norm, r.OptionalLayerNorm("decoder/layer_norm", d));
  }
  const int target_vocab = model->decoder_embeddings.vocab_size;
  ASSIGN_OR_RETURN(model->output_projection, r.Linear("decoder/projection", target_vocab, d));

  auto result = std::make_unique<TranslationModel>();
  result->path = dir;
  result->format = "ctranslate2";
  const std::string& unk = conventions.unk_token;
  ASSIGN_OR_RETURN(result->source_vocabulary, LoadVocabulary(dir, "source", unk));
  ASSIGN_OR_RETURN(result->target_vocabulary, LoadVocabulary(dir, "target", unk));
  if (result->source_vocabulary.size() != model->encoder_embeddings.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the source vocabulary has ", result->source_vocabulary.size(),
                     " tokens but tensor ", source_embeddings, " has ",
                     model->encoder_embeddings.vocab_size, " rows"));
  }
  if (result->target_vocabulary.size() != target_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the target vocabulary has ", result->target_vocabulary.size(),
                     " tokens but tensor decoder/embeddings/weight has ", target_vocab, " rows"));
  }

  const std::string& bos = conventions.bos_token;
  const std::string& eos = conventions.eos_token;
  if (!conventions.decoder_start_token.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": models whose decoder start token comes from the caller are not supported"));
  }
  const std::string& start = *conventions.decoder_start_token;
  const Vocabulary& target = result->target_vocabulary;
  const Vocabulary& source = result->source_vocabulary;
  if (!target.Find(start) || !target.Find(eos)) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": the target vocabulary lacks \"", start, "\" or \"", eos, "\""));
  }
  c.decoder_start_id = *target.Find(start);
  c.eos_id = *target.Find(eos);
  for (const std::string& special : {std::string("<blank>"), bos, eos, start, unk}) {
    if (auto id = target.Find(special)) result->target_special_ids.push_back(*id);
  }
  if (auto id = source.Find(unk)) result->source_unk_id = *id;
  if (conventions.add_source_bos && source.Find(bos)) result->source_bos_id = *source.Find(bos);
  if (conventions.add_source_eos && source.Find(eos)) result->source_eos_id = *source.Find(eos);
  result->codec = std::make_unique<WhitespaceCodec>();
  PackEncoderWeights(*model, compute_type);
  PackDecoderWeights(*model, compute_type);
  CompactWeights(*model);
  result->transformer = std::move(model);
  return result;
}

}  // namespace rosetta
