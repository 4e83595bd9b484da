#include "engine/transformer_weights.h"

#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "engine/decoding.h"
#include "engine/packed_gemm.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::rosetta::testing::RandomVector;

constexpr int kDModel = 32;
constexpr int kFfn = 64;
constexpr int kVocab = 50;
constexpr int kPositions = 24;

// A small random encoder-decoder, every tensor in a buffer of its own as loaders store them. With
// `tied`, the decoder embeddings and the output projection are copies of the encoder embeddings
// (tied embeddings saved under several names) and the decoder positions of the encoder's;
// otherwise all differ.
std::shared_ptr<TransformerModel> MakeModel(bool tied, unsigned seed) {
  std::mt19937 rng(seed);
  auto model = std::make_shared<TransformerModel>();
  TransformerConfig& c = model->config;
  c.d_model = kDModel;
  c.num_heads = 4;
  c.encoder_layers = 1;
  c.decoder_layers = 1;
  c.decoder_start_id = 0;
  c.eos_id = 1;
  auto store = [&](size_t n, float scale) {
    std::vector<float> v = RandomVector(n, rng, scale);
    return model->Store(AlignedVector<float>(v.begin(), v.end()));
  };
  auto linear = [&](int out, int in) {
    LinearWeights w;
    w.in = in;
    w.out = out;
    w.weight = store(static_cast<size_t>(out) * in, 0.3f);
    w.bias = store(out, 0.1f);
    return w;
  };
  auto norm = [&] {
    std::vector<float> gamma(kDModel, 1.0f);
    for (float& g : gamma) g += std::uniform_real_distribution<float>(-0.1f, 0.1f)(rng);
    return LayerNormWeights{model->Store(AlignedVector<float>(gamma.begin(), gamma.end())),
                            store(kDModel, 0.1f)};
  };
  const size_t table = static_cast<size_t>(kVocab) * kDModel;
  const size_t positions = static_cast<size_t>(kPositions) * kDModel;
  auto copy = [&](const float* from, size_t n) {
    return model->Store(AlignedVector<float>(from, from + n));
  };
  // With `same_as`, copies of its table and positions (as sinusoidal positions are on both sides).
  auto embeddings = [&](const EmbeddingWeights* same_as) {
    EmbeddingWeights e;
    e.vocab_size = kVocab;
    e.table = same_as != nullptr ? copy(same_as->table, table) : store(table, 1.0f);
    e.positions = same_as != nullptr ? copy(same_as->positions, positions) : store(positions, 0.5f);
    e.max_positions = kPositions;
    return e;
  };
  model->encoder_embeddings = embeddings(nullptr);
  EncoderLayerWeights encoder;
  encoder.self_attention = {norm(), linear(3 * kDModel, kDModel), linear(kDModel, kDModel)};
  encoder.ffn = {norm(), linear(kFfn, kDModel), linear(kDModel, kFfn)};
  model->encoder_layers.push_back(encoder);
  const float* shared = tied ? model->encoder_embeddings.table : nullptr;
  model->decoder_embeddings = embeddings(tied ? &model->encoder_embeddings : nullptr);
  DecoderLayerWeights decoder;
  decoder.self_attention = {norm(), linear(3 * kDModel, kDModel), linear(kDModel, kDModel)};
  decoder.cross_attention = {norm(), linear(kDModel, kDModel), linear(2 * kDModel, kDModel),
                             linear(kDModel, kDModel)};
  decoder.ffn = {norm(), linear(kFfn, kDModel), linear(kDModel, kFfn)};
  model->decoder_layers.push_back(decoder);
  if (tied) {
    model->output_projection = {copy(shared, table), store(kVocab, 0.1f), kDModel, kVocab};
  } else {
    model->output_projection = linear(kVocab, kDModel);
  }
  return model;
}

std::vector<const LinearWeights*> Linears(const TransformerModel& m) {
  std::vector<const LinearWeights*> all;
  for (const EncoderLayerWeights& l : m.encoder_layers) {
    all.insert(all.end(),
               {&l.self_attention.qkv, &l.self_attention.output, &l.ffn.inner, &l.ffn.outer});
  }
  for (const DecoderLayerWeights& l : m.decoder_layers) {
    all.insert(all.end(),
               {&l.self_attention.qkv, &l.self_attention.output, &l.cross_attention.query,
                &l.cross_attention.kv, &l.cross_attention.output, &l.ffn.inner, &l.ffn.outer});
  }
  all.push_back(&m.output_projection);
  return all;
}

int64_t Floats(const LinearWeights& w) { return static_cast<int64_t>(w.out) * w.in + w.out; }

void Pack(TransformerModel& model, ComputeType type) {
  PackEncoderWeights(model, type);
  PackDecoderWeights(model, type);
}

std::vector<ComputeType> SupportedTypes() {
  std::vector<ComputeType> types;
  if (!PackedGemmSupported()) return types;
  types.push_back(ComputeType::kFloat32);
  if (PackedBfloat16Supported()) types.push_back(ComputeType::kBfloat16);
  if (PackedInt8Supported()) types.push_back(ComputeType::kInt8);
  return types;
}

// The two models translate `sources` to the same tokens with the same scores, bit for bit.
void ExpectSameTranslations(const std::shared_ptr<TransformerModel>& expected_model,
                            const std::shared_ptr<TransformerModel>& actual_model,
                            const std::vector<std::vector<int32_t>>& sources,
                            const DecodingOptions& options) {
  auto expected = TranslateBatch(expected_model, sources, options, 2);
  auto actual = TranslateBatch(actual_model, sources, options, 2);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_TRUE(actual.ok()) << actual.status();
  ASSERT_EQ(actual->size(), expected->size());
  for (size_t i = 0; i < actual->size(); ++i) {
    ASSERT_EQ((*actual)[i].size(), (*expected)[i].size());
    for (size_t h = 0; h < (*actual)[i].size(); ++h) {
      EXPECT_EQ((*actual)[i][h].tokens, (*expected)[i][h].tokens) << i;
      EXPECT_EQ((*actual)[i][h].score, (*expected)[i][h].score) << i;
    }
  }
}

TEST(CompactWeights, FreesEveryPackedCopyAndSharesTiedTables) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "no AVX-512: nothing is packed";
  std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/true, 1);
  Pack(*model, ComputeType::kFloat32);
  const int64_t before = WeightBytes(*model);
  const size_t buffers = model->storage.size();
  const float* encoder_table = model->encoder_embeddings.table;
  int64_t freed = 0;
  for (const LinearWeights* w : Linears(*model)) freed += Floats(*w);
  CompactWeights(*model);

  // The packed copies serve every row count: the copies as loaded are gone.
  for (const LinearWeights* w : Linears(*model)) {
    EXPECT_EQ(w->weight, nullptr);
    EXPECT_EQ(w->bias, nullptr);
    ASSERT_NE(w->packed, nullptr);
  }
  // The decoder's equal tables are the encoder's now.
  EXPECT_EQ(model->encoder_embeddings.table, encoder_table);
  EXPECT_EQ(model->decoder_embeddings.table, encoder_table);
  EXPECT_EQ(model->decoder_embeddings.positions, model->encoder_embeddings.positions);
  freed += kVocab * kDModel + kPositions * kDModel;
  EXPECT_EQ(before - WeightBytes(*model), freed * static_cast<int64_t>(sizeof(float)));
  // 12 linears of a weight and a bias each, and the decoder's two tables.
  EXPECT_EQ(model->storage.size(), buffers - 12 * 2 - 2);
}

// Without packed copies (CPUs without AVX-512) the weights as loaded stay, and tied tables are
// held once: the output projection multiplies the decoder's (= the encoder's) table.
TEST(CompactWeights, UnpackedModelsShareTiedTables) {
  std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/true, 1);
  const size_t buffers = model->storage.size();
  const float* encoder_table = model->encoder_embeddings.table;
  CompactWeights(*model);
  EXPECT_EQ(model->decoder_embeddings.table, encoder_table);
  EXPECT_EQ(model->output_projection.weight, encoder_table);
  EXPECT_EQ(model->decoder_embeddings.positions, model->encoder_embeddings.positions);
  EXPECT_NE(model->encoder_layers[0].ffn.inner.weight, nullptr);
  EXPECT_EQ(model->storage.size(), buffers - 3);
}

TEST(CompactWeights, EveryTypeKeepsOnlyTablesAndNorms) {
  for (ComputeType type : SupportedTypes()) {
    SCOPED_TRACE(ComputeTypeName(type));
    std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/false, 2);
    Pack(*model, type);
    const float* tables[] = {model->encoder_embeddings.table, model->decoder_embeddings.table};
    const float* positions = model->decoder_embeddings.positions;
    const float* gamma = model->decoder_layers[0].ffn.norm.gamma;
    CompactWeights(*model);
    for (const LinearWeights* w : Linears(*model)) {
      EXPECT_EQ(w->weight, nullptr);
      EXPECT_EQ(w->bias, nullptr);
      EXPECT_NE(w->packed, nullptr);
    }
    // Different tables stay apart; what the forward pass reads directly stays.
    EXPECT_EQ(model->encoder_embeddings.table, tables[0]);
    EXPECT_EQ(model->decoder_embeddings.table, tables[1]);
    EXPECT_EQ(model->decoder_embeddings.positions, positions);
    EXPECT_EQ(model->decoder_layers[0].ffn.norm.gamma, gamma);
    // Left: 2 tables, 2 position tables, 3 + 2 norms of 2 vectors each.
    EXPECT_EQ(model->storage.size(), 2u + 2u + 10u);
  }
}

TEST(CompactWeights, DoesNotShareTablesThatDiffer) {
  std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/true, 3);
  // One value of the decoder's copy differs: not the same table.
  const_cast<float*>(model->decoder_embeddings.table)[kVocab * kDModel - 1] += 1.0f;
  const_cast<float*>(model->decoder_embeddings.positions)[0] += 1.0f;
  const float* decoder_table = model->decoder_embeddings.table;
  const float* decoder_positions = model->decoder_embeddings.positions;
  const float* projection = model->output_projection.weight;
  CompactWeights(*model);
  EXPECT_EQ(model->decoder_embeddings.table, decoder_table);
  EXPECT_NE(model->decoder_embeddings.table, model->encoder_embeddings.table);
  EXPECT_EQ(model->decoder_embeddings.positions, decoder_positions);
  // The projection equals the encoder's table, not the decoder's: it keeps its own.
  EXPECT_EQ(model->output_projection.weight, projection);
}

TEST(CompactWeights, TranslatesExactlyAsBefore) {
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> sources;
  // 80 sentences of 4 beams: decoder steps of up to 320 rows.
  for (int s = 0; s < 80; ++s) {
    std::vector<int32_t> ids(1 + rng() % 20);
    for (int32_t& id : ids) id = 2 + static_cast<int32_t>(rng() % (kVocab - 2));
    sources.push_back(ids);
  }
  DecodingOptions options;
  options.beam_size = 4;
  options.max_length = 12;
  std::vector<ComputeType> types = SupportedTypes();
  if (types.empty()) types.push_back(ComputeType::kFloat32);  // nothing packed, nothing freed
  for (ComputeType type : types) {
    for (bool tied : {true, false}) {
      SCOPED_TRACE(::testing::Message() << ComputeTypeName(type) << (tied ? " tied" : ""));
      std::shared_ptr<TransformerModel> whole = MakeModel(tied, 4);
      std::shared_ptr<TransformerModel> compact = MakeModel(tied, 4);
      Pack(*whole, type);
      Pack(*compact, type);
      CompactWeights(*compact);
      if (PackedGemmSupported()) {
        EXPECT_LT(WeightBytes(*compact), WeightBytes(*whole));
      }
      ExpectSameTranslations(whole, compact, sources, options);
    }
  }
}

// A loader packs each layer as it reads it (before it joins the model): the layer's weights as
// loaded that the packed copies serve at every row count are freed at once, the model then
// compacts to exactly what packing at the end gives, and translates exactly as it does.
TEST(PackLayer, FreesEachLayersLoadedCopiesAsItIsRead) {
  std::mt19937 rng(9);
  std::vector<std::vector<int32_t>> sources;
  for (int s = 0; s < 24; ++s) {
    std::vector<int32_t> ids(1 + rng() % 16);
    for (int32_t& id : ids) id = 2 + static_cast<int32_t>(rng() % (kVocab - 2));
    sources.push_back(ids);
  }
  DecodingOptions options;
  options.beam_size = 2;
  options.max_length = 10;
  for (ComputeType type : SupportedTypes()) {
    SCOPED_TRACE(ComputeTypeName(type));
    std::shared_ptr<TransformerModel> at_the_end = MakeModel(/*tied=*/true, 5);
    Pack(*at_the_end, type);
    CompactWeights(*at_the_end);

    std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/true, 5);
    EncoderLayerWeights encoder = model->encoder_layers[0];
    DecoderLayerWeights decoder = model->decoder_layers[0];
    model->encoder_layers.clear();
    model->decoder_layers.clear();
    const size_t buffers = model->storage.size();
    PackEncoderLayer(*model, encoder, type);
    // Four linears of a weight and a bias each: all served by their packed copies.
    EXPECT_EQ(model->storage.size(), buffers - 8);
    for (const LinearWeights* w : {&encoder.self_attention.qkv, &encoder.self_attention.output,
                                   &encoder.ffn.inner, &encoder.ffn.outer}) {
      EXPECT_EQ(w->weight, nullptr);
      ASSERT_NE(w->packed, nullptr);
      EXPECT_EQ(w->packed->type, type);
    }
    model->encoder_layers.push_back(encoder);
    PackDecoderLayer(*model, decoder, type);
    // Seven linears.
    EXPECT_EQ(model->storage.size(), buffers - 8 - 14);
    EXPECT_EQ(decoder.cross_attention.kv.weight, nullptr);
    EXPECT_EQ(decoder.ffn.inner.weight, nullptr);
    ASSERT_NE(decoder.ffn.inner.packed, nullptr);
    model->decoder_layers.push_back(decoder);
    const size_t packed_copies = model->packed_storage.size();
    Pack(*model, type);  // what loaders do at the end: packs the output projection only
    EXPECT_EQ(model->packed_storage.size(), packed_copies + 1);
    CompactWeights(*model);
    EXPECT_EQ(WeightBytes(*model), WeightBytes(*at_the_end));
    EXPECT_EQ(model->storage.size(), at_the_end->storage.size());

    ExpectSameTranslations(at_the_end, model, sources, options);
  }
}

// A layer's weights that something in the model still reads are not freed with the layer.
TEST(PackLayer, KeepsWhatTheModelStillPointsInto) {
  for (ComputeType type : SupportedTypes()) {
    SCOPED_TRACE(ComputeTypeName(type));
    std::shared_ptr<TransformerModel> model = MakeModel(/*tied=*/false, 6);
    EncoderLayerWeights layer = model->encoder_layers[0];
    model->encoder_layers.clear();
    // The layer's FFN input weights are (as a loader could alias them) the model's position
    // table, [kPositions x kDModel]: rows of the table.
    layer.ffn.inner.weight = model->encoder_embeddings.positions;
    layer.ffn.inner.out = kPositions;
    layer.ffn.outer.in = kPositions;
    std::vector<float> outer(static_cast<size_t>(kDModel) * kPositions, 0.5f);
    layer.ffn.outer.weight = model->Store(AlignedVector<float>(outer.begin(), outer.end()));
    const std::vector<float> positions(model->encoder_embeddings.positions,
                                       model->encoder_embeddings.positions + kPositions * kDModel);
    const size_t buffers = model->storage.size();
    PackEncoderLayer(*model, layer, type);
    // Freed: qkv, output and the FFN's outer weights and biases, and the inner bias (7
    // buffers); kept: the position table the inner weights came from.
    EXPECT_EQ(model->storage.size(), buffers - 7);
    EXPECT_EQ(layer.ffn.inner.weight, nullptr);
    EXPECT_EQ(std::memcmp(model->encoder_embeddings.positions, positions.data(),
                          positions.size() * sizeof(float)),
              0);
  }
}

}  // namespace
}  // namespace rosetta
