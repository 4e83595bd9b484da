// CTranslate2 binary version 6 model directories (the format current CTranslate2 releases write:
// type ids and byte counts, an alias section, revision >= 5 attributes under encoder/ and
// decoder/, config.json and JSON vocabularies). No real v6 file is available, so the tests
// transcode the real v2 aren-transliteration models (../shared) into v6 directories with a small
// writer below, and check that they load and translate exactly like the originals.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/ctranslate2_file.h"
#include "engine/decoding.h"
#include "engine/model_loader.h"
#include "engine/tensor_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using testing::ArenModel;
using ::testing::HasSubstr;

constexpr char kFloat[] = "v2/aren-transliteration";
constexpr char kInt8[] = "v2/aren-transliteration-i8";
constexpr char kInt16[] = "v2/aren-transliteration-i16";
constexpr char kInput[] = "آ ت ز م و ن";

// ---------------------------------------------------------------------------------------------
// A minimal CTranslate2 model.bin writer (binary versions >= 4 layout).

// One variable record. `type_id` and `declared_bytes` are written as given, so tests can write
// inconsistent records.
struct Var {
  std::string name;
  int type_id = 0;
  std::vector<int64_t> shape;
  std::string data;
  std::optional<uint32_t> declared_bytes;  // default: data.size()
};

int Ct2TypeId(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 0;
    case DType::kInt8:
      return 1;
    case DType::kInt16:
      return 2;
    case DType::kInt32:
      return 3;
    case DType::kFloat16:
      return 4;
    case DType::kBFloat16:
      return 5;
    default:
      ADD_FAILURE() << "no CTranslate2 type id for " << DTypeName(dtype);
      return 255;
  }
}

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void PutString(std::string& out, absl::string_view s) {
  Put<uint16_t>(out, static_cast<uint16_t>(s.size() + 1));
  out.append(s.data(), s.size());
  out.push_back('\0');
}

struct BinHeader {
  uint32_t version = 6;
  std::string spec = "TransformerSpec";
  uint32_t revision = 7;
};

using Aliases = std::vector<std::pair<std::string, std::string>>;  // alias -> target

// Variables sorted by name, as CTranslate2's writer does, then the alias section.
std::string SerializeModelBin(std::vector<Var> vars, const Aliases& aliases = {},
                              const BinHeader& header = {}) {
  std::sort(vars.begin(), vars.end(), [](const Var& a, const Var& b) { return a.name < b.name; });
  std::string out;
  Put<uint32_t>(out, header.version);
  PutString(out, header.spec);
  Put<uint32_t>(out, header.revision);
  Put<uint32_t>(out, static_cast<uint32_t>(vars.size()));
  for (const Var& v : vars) {
    PutString(out, v.name);
    Put<uint8_t>(out, static_cast<uint8_t>(v.shape.size()));
    for (int64_t dim : v.shape) Put<uint32_t>(out, static_cast<uint32_t>(dim));
    Put<uint8_t>(out, static_cast<uint8_t>(v.type_id));
    Put<uint32_t>(out, v.declared_bytes.value_or(static_cast<uint32_t>(v.data.size())));
    out += v.data;
  }
  Put<uint32_t>(out, static_cast<uint32_t>(aliases.size()));
  for (const auto& [alias, target] : aliases) {
    PutString(out, alias);
    PutString(out, target);
  }
  return out;
}

template <typename T>
Var Scalar(const std::string& name, DType dtype, T value) {
  Var v{name, Ct2TypeId(dtype), {}, std::string(sizeof(T), '\0'), std::nullopt};
  std::memcpy(v.data.data(), &value, sizeof(T));
  return v;
}

// IEEE binary16 from float32, rounding to nearest even (subnormals included).
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) return sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0);  // inf, NaN
  if (abs >= 0x477ff000) return sign | 0x7c00;  // >= 65520 rounds to infinity
  if (abs < 0x38800000) {                       // below 2^-14: subnormal (or zero)
    float magnitude;
    std::memcpy(&magnitude, &abs, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(magnitude * 0x1p24f));
  }
  uint32_t h = ((((abs >> 23) - 127 + 15) << 10) | ((abs & 0x7fffff) >> 13));
  const uint32_t rest = abs & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
}

// The variables of a real model.bin, copied out of the mapping.
std::vector<Var> ReadVars(const std::string& variant, int* version = nullptr) {
  absl::StatusOr<Ct2ModelBin> bin = ReadCt2ModelBin(ArenModel(variant) + "/model.bin");
  EXPECT_TRUE(bin.ok()) << bin.status();
  if (!bin.ok()) return {};
  if (version != nullptr) *version = bin->version;
  std::vector<Var> vars;
  for (const auto& [name, t] : bin->variables->tensors()) {
    vars.push_back({name, Ct2TypeId(t.dtype), t.shape,
                    std::string(reinterpret_cast<const char*>(t.data), t.num_bytes), std::nullopt});
  }
  return vars;
}

// What a revision 7 TransformerSpec writer stores for the aren model: the v2 variables with the
// source embeddings renamed (rev >= 4 writes a list of embeddings) and the rev >= 5 attributes.
std::vector<Var> TranscodeToV6(const std::string& variant, bool to_float16 = false) {
  std::vector<Var> vars = ReadVars(variant);
  EXPECT_GE(vars.size(), 200u);
  for (Var& v : vars) {
    if (v.name == "encoder/embeddings/weight") v.name = "encoder/embeddings_0/weight";
    if (v.name == "encoder/embeddings/weight_scale") v.name = "encoder/embeddings_0/weight_scale";
    if (to_float16 && v.type_id == 0) {
      std::string half(v.data.size() / 2, '\0');
      for (size_t i = 0; i < v.data.size() / 4; ++i) {
        float f;
        std::memcpy(&f, v.data.data() + 4 * i, 4);
        const uint16_t h = FloatToHalf(f);
        std::memcpy(half.data() + 2 * i, &h, 2);
      }
      v.data = std::move(half);
      v.type_id = 4;
    }
  }
  for (const char* scope : {"encoder", "decoder"}) {
    const std::string s = scope;
    vars.push_back(Scalar<int16_t>(s + "/num_heads", DType::kInt16, 8));
    vars.push_back(Scalar<int8_t>(s + "/pre_norm", DType::kInt8, 1));
    vars.push_back(Scalar<int8_t>(s + "/activation", DType::kInt8, 0));
    vars.push_back(Scalar<int8_t>(s + "/scale_embeddings", DType::kInt8, 1));
  }
  // Further attributes real revision 5-7 files carry; the engine must tolerate them.
  vars.push_back(Scalar<int8_t>("encoder/embeddings_merge", DType::kInt8, 0));
  vars.push_back(Scalar<int16_t>("decoder/alignment_layer", DType::kInt16, -1));
  vars.push_back(Scalar<int16_t>("decoder/alignment_heads", DType::kInt16, 1));
  return vars;
}

Var* FindVar(std::vector<Var>& vars, absl::string_view name) {
  for (Var& v : vars)
    if (v.name == name) return &v;
  ADD_FAILURE() << "no variable " << name;
  return nullptr;
}

void RemoveVar(std::vector<Var>& vars, absl::string_view name) {
  const size_t before = vars.size();
  vars.erase(std::remove_if(vars.begin(), vars.end(), [&](const Var& v) { return v.name == name; }),
             vars.end());
  EXPECT_EQ(vars.size() + 1, before) << name;
}

// The tokens of a .txt vocabulary of the aren models (split on '\n', final newline dropped).
std::vector<std::string> TxtTokens(const std::string& file) {
  std::string text = testing::ReadFile(ArenModel(kFloat) + "/" + file);
  EXPECT_FALSE(text.empty()) << file;
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return absl::StrSplit(text, '\n');
}

// config.json as CTranslate2 3.x writes it for a TransformerSpec.
nlohmann::json DefaultConfig() {
  return {
      {"add_source_bos", false},        {"add_source_eos", false}, {"bos_token", "<s>"},
      {"decoder_start_token", "<s>"},   {"eos_token", "</s>"},     {"layer_norm_epsilon", nullptr},
      {"multi_query_attention", false}, {"unk_token", "<unk>"}};
}

// A v6 model directory: model.bin, config.json and source/target_vocabulary.json.
std::string WriteV6Dir(const std::string& name, const std::vector<Var>& vars,
                       const Aliases& aliases = {},
                       const std::string& config = DefaultConfig().dump(2) + "\n",
                       const BinHeader& header = {}) {
  const std::string dir = testing::MakeTempDir(name);
  testing::WriteFile(dir + "/model.bin", SerializeModelBin(vars, aliases, header));
  testing::WriteFile(dir + "/config.json", config);
  testing::WriteFile(dir + "/source_vocabulary.json",
                     nlohmann::json(TxtTokens("source_vocabulary.txt")).dump());
  testing::WriteFile(dir + "/target_vocabulary.json",
                     nlohmann::json(TxtTokens("target_vocabulary.txt")).dump());
  return dir;
}

std::string WithConfig(const std::string& key, const nlohmann::json& value) {
  nlohmann::json config = DefaultConfig();
  config[key] = value;
  return config.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------
// Loading and translating.

std::unique_ptr<TranslationModel> LoadOk(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<TranslationModel>> model = LoadTranslationModel(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

absl::Status LoadStatus(const std::string& dir) { return LoadTranslationModel(dir).status(); }

struct Output {
  std::string text;
  float score;
};

std::vector<Output> Translate(const TranslationModel& model, const std::vector<std::string>& lines,
                              const DecodingOptions& options) {
  std::vector<std::vector<int32_t>> sources;
  for (const std::string& line : lines) {
    absl::StatusOr<std::vector<int32_t>> ids = model.EncodeText(line);
    EXPECT_TRUE(ids.ok()) << ids.status();
    sources.push_back(ids.ok() ? *ids : std::vector<int32_t>{});
  }
  auto results = TranslateBatch(model.transformer, sources, options);
  EXPECT_TRUE(results.ok()) << results.status();
  std::vector<Output> outputs;
  if (!results.ok()) return outputs;
  for (const auto& hypotheses : *results) {
    outputs.push_back({model.DecodeText(hypotheses.at(0).tokens), hypotheses.at(0).score});
  }
  return outputs;
}

DecodingOptions Options(int beam, int max_length = 256) {
  DecodingOptions o;
  o.beam_size = beam;
  o.max_length = max_length;
  return o;
}

// Compares n floats exactly; with `via_half`, `a` must equal `b` rounded to float16 (a model
// converted to float16 by FloatToHalf and widened by the loader). Reports the first difference.
void ExpectSameValues(const float* a, const float* b, size_t n, bool via_half,
                      const std::string& what) {
  ASSERT_EQ(a == nullptr, b == nullptr) << what;
  if (a == nullptr) return;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float expected = via_half ? HalfToFloat(FloatToHalf(b[i])) : b[i];
    if (a[i] != expected && bad++ == 0) {
      ADD_FAILURE() << what << "[" << i << "]: " << a[i] << " vs " << expected;
    }
  }
  EXPECT_EQ(bad, 0u) << what;
}

// A linear layer's weights [out x in] row-major, as loaded or, once freed, read back from its
// float32 packed panels (kPackedPanelWidth columns of W per panel, k rows each).
std::vector<float> WeightValues(const LinearWeights& w) {
  if (w.weight != nullptr) return {w.weight, w.weight + static_cast<size_t>(w.out) * w.in};
  std::vector<float> values;
  if (w.packed == nullptr || w.packed->type != ComputeType::kFloat32) return values;
  values.resize(static_cast<size_t>(w.out) * w.in);
  for (int j = 0; j < w.out; ++j) {
    const float* panel = w.packed->data.data() +
                         static_cast<size_t>(j / kPackedPanelWidth) * w.in * kPackedPanelWidth;
    for (int kk = 0; kk < w.in; ++kk) {
      values[static_cast<size_t>(j) * w.in + kk] =
          panel[static_cast<size_t>(kk) * kPackedPanelWidth + j % kPackedPanelWidth];
    }
  }
  return values;
}

std::vector<float> BiasValues(const LinearWeights& w) {
  if (w.bias != nullptr) return {w.bias, w.bias + w.out};
  if (w.packed == nullptr || w.packed->bias.empty()) return {};
  return {w.packed->bias.begin(), w.packed->bias.begin() + w.out};
}

void ExpectSameLinear(const LinearWeights& a, const LinearWeights& b, bool via_half,
                      const std::string& what) {
  ASSERT_EQ(a.out, b.out) << what;
  ASSERT_EQ(a.in, b.in) << what;
  ASSERT_EQ(a.packed == nullptr, b.packed == nullptr) << what;
  if (a.weight == nullptr && a.packed != nullptr) {
    // Released at load: the packed copy is all that is left (the same panels from the same
    // values).
    ASSERT_EQ(b.weight, nullptr) << what;
    ASSERT_EQ(a.packed->data.size(), b.packed->data.size()) << what;
    ExpectSameValues(a.packed->data.data(), b.packed->data.data(), a.packed->data.size(), via_half,
                     what + ".packed");
    ASSERT_EQ(a.packed->bias.size(), b.packed->bias.size()) << what;
    if (!a.packed->bias.empty()) {
      ExpectSameValues(a.packed->bias.data(), b.packed->bias.data(), a.packed->bias.size(),
                       via_half, what + ".packed bias");
    }
    return;
  }
  ExpectSameValues(a.weight, b.weight, static_cast<size_t>(a.out) * a.in, via_half,
                   what + ".weight");
  ExpectSameValues(a.bias, b.bias, a.out, via_half, what + ".bias");
}

void ExpectSameNorm(const LayerNormWeights& a, const LayerNormWeights& b, int d, bool via_half,
                    const std::string& what) {
  ExpectSameValues(a.gamma, b.gamma, d, via_half, what + ".gamma");
  ExpectSameValues(a.beta, b.beta, d, via_half, what + ".beta");
}

void ExpectSameEmbeddings(const EmbeddingWeights& a, const EmbeddingWeights& b, int d,
                          bool via_half, const std::string& what) {
  ASSERT_EQ(a.vocab_size, b.vocab_size) << what;
  EXPECT_EQ(a.scale, b.scale) << what;
  ExpectSameValues(a.table, b.table, static_cast<size_t>(a.vocab_size) * d, via_half,
                   what + ".table");
  ASSERT_EQ(a.max_positions, b.max_positions) << what;
  ExpectSameValues(a.positions, b.positions, static_cast<size_t>(a.max_positions) * d, false,
                   what + ".positions");
}

// Every weight and hyper-parameter of two loaded models.
void ExpectSameModel(const TransformerModel& a, const TransformerModel& b, bool via_half) {
  const TransformerConfig& c = a.config;
  ASSERT_EQ(c.d_model, b.config.d_model);
  EXPECT_EQ(c.num_heads, b.config.num_heads);
  ASSERT_EQ(c.encoder_layers, b.config.encoder_layers);
  ASSERT_EQ(c.decoder_layers, b.config.decoder_layers);
  ASSERT_EQ(a.encoder_layers.size(), b.encoder_layers.size());
  ASSERT_EQ(a.decoder_layers.size(), b.decoder_layers.size());
  EXPECT_EQ(c.pre_norm, b.config.pre_norm);
  EXPECT_EQ(c.activation, b.config.activation);
  EXPECT_EQ(c.layer_norm_epsilon, b.config.layer_norm_epsilon);
  EXPECT_EQ(c.decoder_start_id, b.config.decoder_start_id);
  EXPECT_EQ(c.eos_id, b.config.eos_id);
  const int d = c.d_model;
  ExpectSameEmbeddings(a.encoder_embeddings, b.encoder_embeddings, d, via_half,
                       "encoder embeddings");
  ExpectSameEmbeddings(a.decoder_embeddings, b.decoder_embeddings, d, via_half,
                       "decoder embeddings");
  for (size_t i = 0; i < a.encoder_layers.size(); ++i) {
    const std::string p = absl::StrCat("encoder layer ", i);
    const EncoderLayerWeights& x = a.encoder_layers[i];
    const EncoderLayerWeights& y = b.encoder_layers[i];
    ExpectSameNorm(x.self_attention.norm, y.self_attention.norm, d, via_half, p + " sa norm");
    ExpectSameLinear(x.self_attention.qkv, y.self_attention.qkv, via_half, p + " sa qkv");
    ExpectSameLinear(x.self_attention.output, y.self_attention.output, via_half, p + " sa output");
    ExpectSameNorm(x.ffn.norm, y.ffn.norm, d, via_half, p + " ffn norm");
    ExpectSameLinear(x.ffn.inner, y.ffn.inner, via_half, p + " ffn inner");
    ExpectSameLinear(x.ffn.outer, y.ffn.outer, via_half, p + " ffn outer");
  }
  for (size_t i = 0; i < a.decoder_layers.size(); ++i) {
    const std::string p = absl::StrCat("decoder layer ", i);
    const DecoderLayerWeights& x = a.decoder_layers[i];
    const DecoderLayerWeights& y = b.decoder_layers[i];
    ExpectSameNorm(x.self_attention.norm, y.self_attention.norm, d, via_half, p + " sa norm");
    ExpectSameLinear(x.self_attention.qkv, y.self_attention.qkv, via_half, p + " sa qkv");
    ExpectSameLinear(x.self_attention.output, y.self_attention.output, via_half, p + " sa output");
    ExpectSameNorm(x.cross_attention.norm, y.cross_attention.norm, d, via_half, p + " ca norm");
    ExpectSameLinear(x.cross_attention.query, y.cross_attention.query, via_half, p + " ca query");
    ExpectSameLinear(x.cross_attention.kv, y.cross_attention.kv, via_half, p + " ca kv");
    ExpectSameLinear(x.cross_attention.output, y.cross_attention.output, via_half,
                     p + " ca output");
    ExpectSameNorm(x.ffn.norm, y.ffn.norm, d, via_half, p + " ffn norm");
    ExpectSameLinear(x.ffn.inner, y.ffn.inner, via_half, p + " ffn inner");
    ExpectSameLinear(x.ffn.outer, y.ffn.outer, via_half, p + " ffn outer");
  }
  ExpectSameNorm(a.encoder_final_norm, b.encoder_final_norm, d, via_half, "encoder final norm");
  ExpectSameNorm(a.decoder_final_norm, b.decoder_final_norm, d, via_half, "decoder final norm");
  ExpectSameLinear(a.output_projection, b.output_projection, via_half, "output projection");
}

// ---------------------------------------------------------------------------------------------
// The writer's float16 conversion, checked against the engine's widening.

TEST(Ct2V6Writer, FloatToHalfRoundTrips) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);         // smallest subnormal
  EXPECT_EQ(FloatToHalf(1.0f + 0x1p-11f), 0x3c00);  // a tie rounds to even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);
  for (float x : {3e-6f, -1e-7f, 6.1e-5f, 0x1p-25f, 0x1.8p-25f}) {  // subnormal results
    EXPECT_NEAR(HalfToFloat(FloatToHalf(x)), x, 0x1p-25f) << x;
  }
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);    // a tie rounds to even (zero)
  EXPECT_EQ(FloatToHalf(0x1.8p-25f), 0x0001);  // above the tie
  std::mt19937 rng(7);
  for (float x : testing::RandomVector(10000, rng, 0.5f)) {
    const float back = HalfToFloat(FloatToHalf(x));
    // Half precision: 11 significant bits, absolute spacing 2^-24 among subnormals.
    EXPECT_LE(std::fabs(back - x), std::max(std::fabs(x) * 0x1p-11f, 0x1p-25f)) << x;
  }
}

// ---------------------------------------------------------------------------------------------
// Transcoded real models.

struct TranscodeCase {
  std::string name;
  std::string variant;  // the v2 original
  bool to_float16;
  std::string weight_type;
  float published_score;   // CTranslate2's greedy score of kInput, length-normalised
  double score_tolerance;  // against the original's scores
};

const std::vector<TranscodeCase> kCases = {
    {"float32", kFloat, false, "float32", -1.061748f / 7, 1e-6},
    {"int8", kInt8, false, "int8", -1.087673f / 7, 1e-6},
    {"int16", kInt16, false, "int16", -1.059990f / 7, 1e-6},
    // Rounding the weights to float16 moves these scores by up to 2.2e-4.
    {"float16", kFloat, true, "float16", -1.061748f / 7, 1e-3},
};

void PrintTo(const TranscodeCase& c, std::ostream* os) { *os << c.name << " from " << c.variant; }

class Ct2V6TranscodeTest : public ::testing::TestWithParam<TranscodeCase> {
 protected:
  std::string WriteDir() {
    return WriteV6Dir("v6_" + GetParam().name,
                      TranscodeToV6(GetParam().variant, GetParam().to_float16));
  }
};

TEST_P(Ct2V6TranscodeTest, ReaderReturnsTheWrittenVariables) {
  const TranscodeCase& p = GetParam();
  int original_version = 0;
  const std::vector<Var> original = ReadVars(p.variant, &original_version);
  EXPECT_EQ(original_version, 2);
  const std::string dir = WriteDir();
  absl::StatusOr<Ct2ModelBin> bin = ReadCt2ModelBin(dir + "/model.bin");
  ASSERT_TRUE(bin.ok()) << bin.status();
  EXPECT_EQ(bin->version, 6);
  EXPECT_EQ(bin->spec, "TransformerSpec");
  EXPECT_EQ(bin->revision, 7);
  // The original variables plus 11 attributes, no alias.
  EXPECT_EQ(bin->variables->tensors().size(), original.size() + 11);
  for (const Var& v : original) {
    std::string name = v.name;
    if (absl::StartsWith(name, "encoder/embeddings/")) name.replace(0, 19, "encoder/embeddings_0/");
    const RawTensor* t = bin->variables->Find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->shape, v.shape) << name;
    if (p.to_float16) {
      ASSERT_EQ(t->dtype, DType::kFloat16) << name;
      ASSERT_EQ(t->num_bytes, v.data.size() / 2) << name;
      continue;
    }
    EXPECT_EQ(Ct2TypeId(t->dtype), v.type_id) << name;
    ASSERT_EQ(t->num_bytes, v.data.size()) << name;
    EXPECT_EQ(std::memcmp(t->data, v.data.data(), v.data.size()), 0) << name;
  }
  const RawTensor* heads = bin->variables->Find("decoder/num_heads");
  ASSERT_NE(heads, nullptr);
  EXPECT_EQ(heads->dtype, DType::kInt16);
  EXPECT_TRUE(heads->shape.empty());
}

TEST_P(Ct2V6TranscodeTest, LoadsTheSameWeightsAsTheOriginal) {
  const TranscodeCase& p = GetParam();
  std::unique_ptr<TranslationModel> original = LoadOk(ArenModel(p.variant));
  std::unique_ptr<TranslationModel> v6 = LoadOk(WriteDir());
  ASSERT_NE(original, nullptr);
  ASSERT_NE(v6, nullptr);
  EXPECT_EQ(v6->format, "ctranslate2");
  EXPECT_THAT(v6->transformer->config.architecture, HasSubstr("binary version 6"));
  EXPECT_EQ(v6->transformer->config.num_heads, 8);
  EXPECT_TRUE(v6->transformer->config.pre_norm);
  EXPECT_EQ(v6->transformer->config.activation, Activation::kRelu);
  EXPECT_FLOAT_EQ(v6->transformer->encoder_embeddings.scale, std::sqrt(32.0f));
  EXPECT_FLOAT_EQ(v6->transformer->decoder_embeddings.scale, std::sqrt(32.0f));
  ExpectSameModel(*v6->transformer, *original->transformer, p.to_float16);
  // JSON vocabularies without <unk>: it is appended, as CTranslate2 does.
  EXPECT_EQ(v6->source_vocabulary.size(), 51);
  EXPECT_EQ(v6->target_vocabulary.size(), 43);
  EXPECT_EQ(v6->source_unk_id, 50);
  EXPECT_EQ(v6->target_vocabulary.Token(42), "<unk>");
  EXPECT_EQ(v6->source_vocabulary.Token(41), "\u200e");  // invisible tokens survive JSON
  EXPECT_EQ(v6->target_vocabulary.Token(v6->transformer->config.decoder_start_id), "<s>");
  EXPECT_EQ(v6->target_vocabulary.Token(v6->transformer->config.eos_id), "</s>");
  EXPECT_EQ(v6->source_bos_id, -1);
  EXPECT_EQ(v6->source_eos_id, -1);
}

TEST_P(Ct2V6TranscodeTest, TranslatesLikeTheOriginal) {
  const TranscodeCase& p = GetParam();
  std::unique_ptr<TranslationModel> original = LoadOk(ArenModel(p.variant));
  std::unique_ptr<TranslationModel> v6 = LoadOk(WriteDir());
  ASSERT_NE(original, nullptr);
  ASSERT_NE(v6, nullptr);
  const std::vector<std::string> lines = {kInput, "آ ز ا", "آ ت ش ي س و ن"};
  struct Setting {
    DecodingOptions options;
    std::string expected;  // for kInput
  };
  for (const Setting& s : {Setting{Options(1), "a t z m o n"}, Setting{Options(2), "a t z m o n"},
                           Setting{Options(1, 3), "a t z"}, Setting{Options(2, 3), "a t z"}}) {
    const std::string what =
        absl::StrCat(p.name, " beam ", s.options.beam_size, " max_length ", s.options.max_length);
    const std::vector<Output> want = Translate(*original, lines, s.options);
    const std::vector<Output> got = Translate(*v6, lines, s.options);
    ASSERT_EQ(got.size(), lines.size()) << what;
    ASSERT_EQ(want.size(), lines.size()) << what;
    EXPECT_EQ(got[0].text, s.expected) << what;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(got[i].text, want[i].text) << what << " line " << i;
      EXPECT_NEAR(got[i].score, want[i].score, p.score_tolerance) << what << " line " << i;
    }
  }
  // CTranslate2's own greedy score of the original model.
  EXPECT_NEAR(Translate(*v6, {kInput}, Options(1))[0].score, p.published_score,
              std::max(p.score_tolerance, 2e-6));
}

TEST_P(Ct2V6TranscodeTest, ReportsTheStoredWeightType) {
  std::unique_ptr<TranslationModel> v6 = LoadOk(WriteDir());
  ASSERT_NE(v6, nullptr);
  // Regression (fixed): engine/ctranslate2_loader.cc (Ct2WeightReader::Tensor, line ~145) only
  // records weight_type for int8/int16 tensors, so a float16 model is reported as "float32"
  // although the field means "how the weights were stored on disk" (transformer_weights.h:92) and
  // rosetta-translate prints it as the model's weight type.
  EXPECT_EQ(v6->transformer->config.weight_type, GetParam().weight_type);
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, Ct2V6TranscodeTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

// ---------------------------------------------------------------------------------------------
// Revision >= 5 attributes are read from encoder/ and decoder/.

TEST(Ct2V6Attributes, ScopedAttributesAreRead) {
  auto with = [](absl::string_view attribute, const Var& encoder, const Var& decoder) {
    std::vector<Var> vars = TranscodeToV6(kFloat);
    *FindVar(vars, absl::StrCat("encoder/", attribute)) = encoder;
    *FindVar(vars, absl::StrCat("decoder/", attribute)) = decoder;
    return vars;
  };
  {
    std::unique_ptr<TranslationModel> m = LoadOk(WriteV6Dir(
        "heads", with("num_heads", Scalar<int16_t>("encoder/num_heads", DType::kInt16, 4),
                      Scalar<int16_t>("decoder/num_heads", DType::kInt16, 4))));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->transformer->config.num_heads, 4);
  }
  {
    std::unique_ptr<TranslationModel> m = LoadOk(WriteV6Dir(
        "activation", with("activation", Scalar<int8_t>("encoder/activation", DType::kInt8, 1),
                           Scalar<int8_t>("decoder/activation", DType::kInt8, 1))));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->transformer->config.activation, Activation::kGeluTanh);
  }
  {
    std::unique_ptr<TranslationModel> m = LoadOk(
        WriteV6Dir("pre_norm", with("pre_norm", Scalar<int8_t>("encoder/pre_norm", DType::kInt8, 0),
                                    Scalar<int8_t>("decoder/pre_norm", DType::kInt8, 0))));
    ASSERT_NE(m, nullptr);
    EXPECT_FALSE(m->transformer->config.pre_norm);
  }
  {
    std::unique_ptr<TranslationModel> m = LoadOk(WriteV6Dir(
        "scale",
        with("scale_embeddings", Scalar<int8_t>("encoder/scale_embeddings", DType::kInt8, 0),
             Scalar<int8_t>("decoder/scale_embeddings", DType::kInt8, 0))));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->transformer->encoder_embeddings.scale, 1.0f);
    EXPECT_EQ(m->transformer->decoder_embeddings.scale, 1.0f);
  }
}

TEST(Ct2V6Header, UnsupportedSpecRevisionIsAnError) {
  // CTranslate2 supports TransformerSpec up to revision 7 and rejects later ones ("unsupported
  // TransformerSpec revision 8 (latest revision supported: 7)", src/models/model.cc): a later
  // writer may change what existing variables mean.
  BinHeader header;
  header.revision = 8;
  const absl::Status status = LoadStatus(
      WriteV6Dir("rev8", TranscodeToV6(kFloat), {}, DefaultConfig().dump(2) + "\n", header));
  // Regression (fixed): engine/ctranslate2_loader.cc (LoadCt2Model, spec checks near line 331-341)
  // never checks bin.revision, so a TransformerSpec revision 8 file loads as if it were revision 7.
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("revision 8"));
}

// ---------------------------------------------------------------------------------------------
// Vocabularies.

TEST(Ct2V6Vocabulary, JsonVocabulariesWithUnkAreNotExtended) {
  const std::string dir = WriteV6Dir("with_unk", TranscodeToV6(kFloat));
  std::vector<std::string> source = TxtTokens("source_vocabulary.txt");
  std::vector<std::string> target = TxtTokens("target_vocabulary.txt");
  source.push_back("<unk>");
  target.push_back("<unk>");
  testing::WriteFile(dir + "/source_vocabulary.json", nlohmann::json(source).dump());
  testing::WriteFile(dir + "/target_vocabulary.json", nlohmann::json(target).dump());
  std::unique_ptr<TranslationModel> m = LoadOk(dir);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->source_vocabulary.size(), 51);
  EXPECT_EQ(m->target_vocabulary.size(), 43);
  EXPECT_EQ(m->source_unk_id, 50);
  EXPECT_EQ(Translate(*m, {kInput}, Options(1))[0].text, "a t z m o n");
}

TEST(Ct2V6Vocabulary, MismatchingSharedVocabularyIsAnError) {
  // The aren source (51 with <unk>) and target (43) vocabularies differ: no shared vocabulary
  // fits. The error names the side and both sizes.
  const std::string dir = WriteV6Dir("shared", TranscodeToV6(kFloat));
  std::filesystem::remove(dir + "/source_vocabulary.json");
  std::filesystem::remove(dir + "/target_vocabulary.json");
  testing::WriteFile(dir + "/shared_vocabulary.json",
                     nlohmann::json(TxtTokens("target_vocabulary.txt")).dump());
  absl::Status status = LoadStatus(dir);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("source vocabulary has 43 tokens"));
  EXPECT_THAT(status.message(), HasSubstr("51"));

  testing::WriteFile(dir + "/shared_vocabulary.json",
                     nlohmann::json(TxtTokens("source_vocabulary.txt")).dump());
  status = LoadStatus(dir);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("target vocabulary has 51 tokens"));
  EXPECT_THAT(status.message(), HasSubstr("43"));
}

TEST(Ct2V6Vocabulary, SharedVocabularyTakesPrecedence) {
  // CTranslate2 (load_vocabulary in src/models/model_reader.cc) looks for shared_vocabulary
  // first and only then for source/target vocabularies. A directory that has both (e.g. a
  // conversion written over an older one) must use the shared one, here a mismatching one.
  const std::string dir = WriteV6Dir("shared_and_separate", TranscodeToV6(kFloat));
  testing::WriteFile(dir + "/shared_vocabulary.json",
                     nlohmann::json(TxtTokens("target_vocabulary.txt")).dump());
  const absl::Status status = LoadStatus(dir);
  // Regression (fixed): engine/ctranslate2_loader.cc LoadVocabulary (line ~299) tries
  // "<side>_vocabulary" before "shared_vocabulary", the reverse of CTranslate2's order, so
  // this directory loads with the stale per-side vocabularies.
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("source vocabulary has 43 tokens"));
}

// ---------------------------------------------------------------------------------------------
// Aliases.

TEST(Ct2V6Alias, TiedProjectionThroughAnAlias) {
  std::unique_ptr<TranslationModel> original = LoadOk(ArenModel(kFloat));
  ASSERT_NE(original, nullptr);
  // (1) The projection aliases a duplicate of the decoder embeddings under a new name;
  // (2) it aliases the decoder embeddings themselves (the tied-embeddings case).
  for (bool duplicate : {true, false}) {
    std::vector<Var> vars = TranscodeToV6(kFloat);
    RemoveVar(vars, "decoder/projection/weight");
    std::string target = "decoder/embeddings/weight";
    if (duplicate) {
      Var copy = *FindVar(vars, target);
      copy.name = target = "decoder/shared_embeddings/weight";
      vars.push_back(copy);
    }
    std::unique_ptr<TranslationModel> m = LoadOk(
        WriteV6Dir(duplicate ? "dup" : "direct", vars, {{"decoder/projection/weight", target}}));
    ASSERT_NE(m, nullptr) << duplicate;
    const TransformerModel& t = *m->transformer;
    ASSERT_EQ(t.output_projection.out, 43);
    ASSERT_EQ(t.output_projection.in, 32);
    const std::vector<float> projection = WeightValues(t.output_projection);
    ASSERT_EQ(projection.size(), 43u * 32u);
    ExpectSameValues(projection.data(), t.decoder_embeddings.table, 43 * 32, false,
                     "projection vs embeddings");
    // The projection really changed (the original one differs from the embeddings), and its
    // bias is still the model's own.
    EXPECT_NE(projection, WeightValues(original->transformer->output_projection));
    const std::vector<float> bias = BiasValues(t.output_projection);
    ASSERT_EQ(bias.size(), 43u);
    EXPECT_EQ(bias, BiasValues(original->transformer->output_projection));
    EXPECT_EQ(Translate(*m, {kInput}, Options(1)).size(), 1u);
  }
}

TEST(Ct2V6Alias, QuantizedAliasSharesTheScale) {
  // An aliased int8 weight takes its per-row scale from the target's "_scale" (CTranslate2
  // registers alias + "_scale" -> target + "_scale").
  std::vector<Var> vars = TranscodeToV6(kInt8);
  RemoveVar(vars, "decoder/projection/weight");
  RemoveVar(vars, "decoder/projection/weight_scale");
  std::unique_ptr<TranslationModel> m = LoadOk(
      WriteV6Dir("int8_alias", vars, {{"decoder/projection/weight", "decoder/embeddings/weight"}}));
  ASSERT_NE(m, nullptr);
  const TransformerModel& t = *m->transformer;
  const std::vector<float> projection = WeightValues(t.output_projection);
  ASSERT_EQ(projection.size(), 43u * 32u);
  ExpectSameValues(projection.data(), t.decoder_embeddings.table, 43 * 32, false,
                   "projection vs embeddings");
}

TEST(Ct2V6Alias, AliasOfAMissingVariableIsAnError) {
  std::vector<Var> vars = TranscodeToV6(kFloat);
  RemoveVar(vars, "decoder/projection/weight");
  const absl::Status status = LoadStatus(WriteV6Dir(
      "missing_target", vars, {{"decoder/projection/weight", "decoder/nonexistent/weight"}}));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("decoder/projection/weight"));
  EXPECT_THAT(status.message(), HasSubstr("decoder/nonexistent/weight"));
  EXPECT_THAT(status.message(), HasSubstr("model.bin"));
}

// ---------------------------------------------------------------------------------------------
// Corrupt or unsupported model.bin.

TEST(Ct2V6Errors, BinaryVersion7IsRejected) {
  BinHeader header;
  header.version = 7;
  const absl::Status status = LoadStatus(
      WriteV6Dir("v7", TranscodeToV6(kFloat), {}, DefaultConfig().dump(2) + "\n", header));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("binary version 7"));
  EXPECT_THAT(status.message(), HasSubstr("model.bin"));
}

TEST(Ct2V6Errors, UnknownTypeIdNamesTheTensor) {
  std::vector<Var> vars = TranscodeToV6(kFloat);
  FindVar(vars, "encoder/layer_1/ffn/linear_1/bias")->type_id = 9;
  const absl::Status status = LoadStatus(WriteV6Dir("type9", vars));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("encoder/layer_1/ffn/linear_1/bias"));
  EXPECT_THAT(status.message(), HasSubstr("type id 9"));
}

TEST(Ct2V6Errors, ByteCountInconsistentWithTheShapeNamesTheTensor) {
  // A writer that stores the element count (the version < 4 convention) instead of bytes. The
  // data written matches the declared count, so only the shape check can catch it.
  std::vector<Var> vars = TranscodeToV6(kFloat);
  Var* v = FindVar(vars, "decoder/layer_3/attention/linear_1/weight");
  ASSERT_EQ(v->data.size(), 64u * 32 * 4);
  v->declared_bytes = 64 * 32;
  v->data.resize(64 * 32);
  const absl::Status status = LoadStatus(WriteV6Dir("bytes", vars));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("decoder/layer_3/attention/linear_1/weight"));
  EXPECT_THAT(status.message(), HasSubstr("2048"));
  EXPECT_THAT(status.message(), HasSubstr("model.bin"));
}

// ---------------------------------------------------------------------------------------------
// config.json.

TEST(Ct2V6Config, InvalidJsonNamesConfigJson) {
  const absl::Status status =
      LoadStatus(WriteV6Dir("bad_json", TranscodeToV6(kFloat), {}, "{\"add_source_bos\": false,"));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("config.json"));
}

TEST(Ct2V6Config, NullDecoderStartTokenIsAClearError) {
  const absl::Status status = LoadStatus(WriteV6Dir("null_start", TranscodeToV6(kFloat), {},
                                                    WithConfig("decoder_start_token", nullptr)));
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("decoder start token"));
}

TEST(Ct2V6Config, DecoderStartTokenComesFromTheConfig) {
  // Fairseq-style conversions start decoding with </s>.
  std::unique_ptr<TranslationModel> m = LoadOk(WriteV6Dir(
      "eos_start", TranscodeToV6(kFloat), {}, WithConfig("decoder_start_token", "</s>")));
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->transformer->config.decoder_start_id, 2);
  EXPECT_EQ(m->transformer->config.eos_id, 2);
}

TEST(Ct2V6Config, LayerNormEpsilon) {
  std::unique_ptr<TranslationModel> m = LoadOk(
      WriteV6Dir("epsilon", TranscodeToV6(kFloat), {}, WithConfig("layer_norm_epsilon", 1e-6)));
  ASSERT_NE(m, nullptr);
  EXPECT_FLOAT_EQ(m->transformer->config.layer_norm_epsilon, 1e-6f);
  const Output out = Translate(*m, {kInput}, Options(1))[0];
  EXPECT_EQ(out.text, "a t z m o n");
  EXPECT_NEAR(out.score, -1.061748f / 7, 1e-5);  // the spec measured 1.4e-6 per token with 1e-6
  // null (the default config) means 1e-5 for LayerNorms with a beta.
  std::unique_ptr<TranslationModel> d =
      LoadOk(WriteV6Dir("default_epsilon", TranscodeToV6(kFloat)));
  ASSERT_NE(d, nullptr);
  EXPECT_FLOAT_EQ(d->transformer->config.layer_norm_epsilon, 1e-5f);
}

TEST(Ct2V6Config, AddSourceBosAndEos) {
  std::unique_ptr<TranslationModel> m =
      LoadOk(WriteV6Dir("eos", TranscodeToV6(kFloat), {}, WithConfig("add_source_eos", true)));
  ASSERT_NE(m, nullptr);
  absl::StatusOr<std::vector<int32_t>> ids = m->EncodeText("آ ت");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{31, 10, 2}));

  nlohmann::json config = DefaultConfig();
  config["add_source_bos"] = true;
  std::unique_ptr<TranslationModel> b =
      LoadOk(WriteV6Dir("bos", TranscodeToV6(kFloat), {}, config.dump(2)));
  ASSERT_NE(b, nullptr);
  ids = b->EncodeText("آ ت");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 31, 10}));

  // The default config adds neither.
  std::unique_ptr<TranslationModel> n = LoadOk(WriteV6Dir("neither", TranscodeToV6(kFloat)));
  ASSERT_NE(n, nullptr);
  ids = n->EncodeText("آ ت");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, (std::vector<int32_t>{31, 10}));
}

TEST(Ct2V6Config, WrongValueTypesAreErrorsNotExceptions) {
  // Valid JSON with values of the wrong type: the loader reports errors through absl::Status
  // and must not let nlohmann::json exceptions escape (the daemon would terminate).
  const std::vector<std::pair<std::string, std::string>> configs = {
      {"bool_as_string", WithConfig("add_source_eos", "yes")},
      {"null_unk", WithConfig("unk_token", nullptr)},
      {"numeric_eos", WithConfig("eos_token", 2)},
      {"not_an_object", "[1, 2, 3]\n"},
  };
  for (const auto& [name, config] : configs) {
    const std::string dir = WriteV6Dir(name, TranscodeToV6(kFloat), {}, config);
    // Regression (fixed): engine/ctranslate2_loader.cc LoadCt2Model reads config.json with
    // nlohmann::json::value() (config.value("multi_query_attention", false) at lines ~390/392,
    // config.value("unk_token", ...) ~455, bos/eos ~470, add_source_bos/eos ~489/491), which throws
    // nlohmann::json::type_error for a key of another type or a non-object document.
    try {
      const absl::Status status = LoadStatus(dir);
      EXPECT_FALSE(status.ok()) << name;
      EXPECT_THAT(status.message(), HasSubstr("config.json")) << name;
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": exception escaped the loader: " << e.what();
    }
  }
}

}  // namespace
}  // namespace rosetta
