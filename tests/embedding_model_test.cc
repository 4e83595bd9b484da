// EmbeddingModel: BERT parity with the PyTorch reference (tests/reference/bert_reference.py) on
// random checkpoints in Hugging Face layout (ids, final states, pooled embeddings), batch ==
// alone, limits and truncation, load errors, and translation models' encoders behind the same API.
//
// The parity tests read the fixture named by ROSETTA_BERT_FIXTURE (written by the
// bert_reference_* CTest fixtures); without it they are skipped.
#include "engine/embedding_model.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/file_util.h"
#include "engine/model_loader.h"
#include "engine/safetensors.h"
#include "engine/sentence_embedding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::testing::HasSubstr;

struct Fixture {
  std::string dir;
  nlohmann::json reference;
  std::unique_ptr<TensorFile> tensors;
};

const char* FixtureDir() { return std::getenv("ROSETTA_BERT_FIXTURE"); }

class BertParityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (FixtureDir() == nullptr) GTEST_SKIP() << "ROSETTA_BERT_FIXTURE is not set (run ctest)";
    fixture_.dir = FixtureDir();
    absl::StatusOr<nlohmann::json> reference =
        ReadJsonFile(JoinPath(fixture_.dir, "reference.json"));
    ASSERT_TRUE(reference.ok()) << reference.status();
    fixture_.reference = *reference;
    absl::StatusOr<std::unique_ptr<TensorFile>> tensors =
        ReadSafetensors(JoinPath(fixture_.dir, "reference.safetensors"));
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    fixture_.tensors = std::move(*tensors);
    absl::StatusOr<std::unique_ptr<EmbeddingModel>> model =
        LoadEmbeddingModel(JoinPath(fixture_.dir, "model"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    pool_ = std::make_unique<ThreadPool>(2);
    workspace_.set_pool(pool_.get());
  }

  std::vector<float> Expected(const std::string& name) const {
    absl::StatusOr<AlignedVector<float>> values = fixture_.tensors->ReadFloat(name, {});
    EXPECT_TRUE(values.ok()) << values.status();
    return values.ok() ? std::vector<float>(values->begin(), values->end()) : std::vector<float>{};
  }

  std::vector<std::vector<int32_t>> ReferenceIds() const {
    std::vector<std::vector<int32_t>> ids;
    for (const auto& c : fixture_.reference["cases"]) {
      ids.push_back(c["ids"].get<std::vector<int32_t>>());
    }
    return ids;
  }

  std::vector<float> Embed(const std::vector<std::vector<int32_t>>& inputs) {
    std::vector<float> out(inputs.size() * model_->dimension());
    model_->Embed(inputs, workspace_, out.data());
    return out;
  }

  void ExpectCloseToTheReference(ComputeType type, double min_cosine);

  Fixture fixture_;
  std::unique_ptr<EmbeddingModel> model_;
  std::unique_ptr<ThreadPool> pool_;
  Workspace workspace_;
};

TEST_F(BertParityTest, DescribesTheModel) {
  const nlohmann::json& config = fixture_.reference["config"];
  EXPECT_EQ(model_->max_tokens(), config["max_tokens"].get<int>());
  EXPECT_EQ(model_->normalizes(), config["normalize"].get<bool>());
  const std::string pooling = config["pooling"].get<std::string>();
  EXPECT_EQ(model_->pooling(), pooling == "cls"   ? Pooling::kCls
                               : pooling == "max" ? Pooling::kMax
                                                  : Pooling::kMean);
  EXPECT_EQ(model_->vocabulary_size(), 30522);
  EXPECT_EQ(model_->weight_type(), "float32");
  EXPECT_EQ(model_->tokenizer_description(), "WordPiece (uncased)");
  EXPECT_THAT(model_->architecture(), HasSubstr("BertModel"));
  if (!std::filesystem::exists(JoinPath(JoinPath(fixture_.dir, "model"), "modules.json"))) {
    EXPECT_THAT(model_->pooling_description(), HasSubstr("default"));
  }
}

TEST_F(BertParityTest, TokenizesLikeTheReference) {
  int truncated_count = 0;
  for (const auto& c : fixture_.reference["cases"]) {
    bool truncated = false;
    absl::StatusOr<std::vector<int32_t>> ids =
        model_->Tokenize(c["text"].get<std::string>(), /*truncate=*/true, &truncated);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << c["text"].dump();
    truncated_count += truncated;
  }
  EXPECT_GE(truncated_count, 1);  // the fixture has a text longer than the limit
}

TEST_F(BertParityTest, PooledEmbeddingsAndStatesMatchTheReference) {
  const std::vector<std::vector<int32_t>> inputs = ReferenceIds();
  const int d = model_->dimension();
  const std::vector<float> pooled = Embed(inputs);
  double worst_cosine = 1.0, worst_pooled = 0.0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::vector<float> expected = Expected("pooled." + std::to_string(i));
    ASSERT_EQ(expected.size(), static_cast<size_t>(d));
    double dot = 0, a2 = 0, b2 = 0, max_abs = 0;
    for (int j = 0; j < d; ++j) {
      const double a = pooled[i * d + j], b = expected[j];
      dot += a * b;
      a2 += a * a;
      b2 += b * b;
      max_abs = std::max(max_abs, std::abs(a - b));
    }
    const double cosine = dot / std::sqrt(a2 * b2);
    EXPECT_GE(cosine, 0.99999) << "text " << i;
    EXPECT_LE(max_abs, 1e-4) << "text " << i;
    worst_cosine = std::min(worst_cosine, cosine);
    worst_pooled = std::max(worst_pooled, max_abs);
  }

  // Per-token final states of the same packed batch.
  std::vector<int32_t> ids;
  std::vector<int> offsets = {0};
  for (const auto& input : inputs) {
    ids.insert(ids.end(), input.begin(), input.end());
    offsets.push_back(static_cast<int>(ids.size()));
  }
  std::vector<float> states(ids.size() * d);
  RunEncoder(model_->encoder(), ids, offsets, workspace_, states.data());
  double worst_state = 0.0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::vector<float> expected = Expected("states." + std::to_string(i));
    ASSERT_EQ(expected.size(), inputs[i].size() * d);
    for (size_t k = 0; k < expected.size(); ++k) {
      worst_state = std::max<double>(
          worst_state, std::abs(states[static_cast<size_t>(offsets[i]) * d + k] - expected[k]));
    }
  }
  EXPECT_LE(worst_state, 1e-4);
  std::printf(
      "parity over %zu texts: min cosine %.9f, max |pooled diff| %.3g, max |state diff| "
      "%.3g\n",
      inputs.size(), worst_cosine, worst_pooled, worst_state);
}

// Computing in bfloat16 or int8: the pooled embeddings stay close to the float32 PyTorch
// reference (cosine at least `min_cosine`), and a text's embedding is the same alone and in a
// batch of mixed lengths.
void BertParityTest::ExpectCloseToTheReference(ComputeType type, double min_cosine) {
  absl::StatusOr<std::unique_ptr<EmbeddingModel>> reduced =
      LoadEmbeddingModel(JoinPath(fixture_.dir, "model"), {.compute_type = type});
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_EQ((*reduced)->compute_type(), type);
  EXPECT_EQ(model_->compute_type(), ComputeType::kFloat32);
  const std::vector<std::vector<int32_t>> inputs = ReferenceIds();
  const int d = model_->dimension();
  std::vector<float> pooled(inputs.size() * d);
  (*reduced)->Embed(inputs, workspace_, pooled.data());
  const std::vector<float> float32 = Embed(inputs);
  double worst_cosine = 1.0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::vector<float> expected = Expected("pooled." + std::to_string(i));
    double dot = 0, a2 = 0, b2 = 0;
    for (int j = 0; j < d; ++j) {
      const double a = pooled[i * d + j], b = expected[j];
      dot += a * b;
      a2 += a * a;
      b2 += b * b;
    }
    worst_cosine = std::min(worst_cosine, dot / std::sqrt(a2 * b2));
    std::vector<float> alone(d);
    const std::vector<std::vector<int32_t>> one = {inputs[i]};
    (*reduced)->Embed(one, workspace_, alone.data());
    for (int j = 0; j < d; ++j) {
      ASSERT_EQ(alone[j], pooled[i * d + j]) << "text " << i << " dimension " << j;
    }
  }
  std::printf("%s over %zu texts: min cosine to the reference %.6f\n",
              std::string(ComputeTypeName(type)).c_str(), inputs.size(), worst_cosine);
  EXPECT_GE(worst_cosine, min_cosine);
  EXPECT_NE(pooled, float32) << "the model computed in float32";
}

TEST_F(BertParityTest, Bfloat16StaysCloseToTheReference) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ExpectCloseToTheReference(ComputeType::kBfloat16, 0.9995);  // 0.99997 or more when written
}

TEST_F(BertParityTest, Int8StaysCloseToTheReference) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  ExpectCloseToTheReference(ComputeType::kInt8, 0.998);  // 0.99946 or more when written
}

TEST_F(BertParityTest, EmbeddingInABatchOf32EqualsAlone) {
  std::vector<std::vector<int32_t>> all = ReferenceIds();
  std::mt19937 rng(3);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<std::vector<int32_t>> batch(all.begin(), all.begin() + 32);
  size_t shortest = 1 << 20, longest = 0;
  for (const auto& input : batch) {
    shortest = std::min(shortest, input.size());
    longest = std::max(longest, input.size());
  }
  ASSERT_LT(shortest * 4, longest) << "the batch should mix lengths";
  const int d = model_->dimension();
  const std::vector<float> together = Embed(batch);
  for (size_t i = 0; i < batch.size(); ++i) {
    const std::vector<float> alone = Embed({batch[i]});
    for (int j = 0; j < d; ++j) {
      ASSERT_NEAR(together[i * d + j], alone[j], 1e-5) << "input " << i << " dimension " << j;
    }
  }
}

// RunEncoder's states of one packed batch under several thread pools. With 2 or 3 threads, a batch
// of equal lengths is split into one group of sentences per thread, each encoded on one thread;
// a batch with one long text cannot be split evenly and runs op by op on all threads (attention
// split over (sentence, head) pairs). Every way must give each text the states it has alone.
TEST_F(BertParityTest, StatesAgreeAcrossThreadCountsAndBatchSplits) {
  const std::vector<std::vector<int32_t>> all = ReferenceIds();
  std::vector<std::vector<int32_t>> equal, one_long;
  for (const auto& input : all) {
    if (input.size() == all[0].size() || equal.size() < 6) {
      equal.push_back(input);
      equal.back().resize(all[0].size(), input.back());
    }
  }
  size_t longest = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i].size() > all[longest].size()) longest = i;
  }
  one_long.push_back(all[longest]);
  for (int i = 0; i < 5; ++i) one_long.push_back({all[i].front(), all[i].back()});
  const int d = model_->dimension();
  for (const auto* batch : {&equal, &one_long}) {
    std::vector<int32_t> ids;
    std::vector<int> offsets = {0};
    for (const auto& input : *batch) {
      ids.insert(ids.end(), input.begin(), input.end());
      offsets.push_back(static_cast<int>(ids.size()));
    }
    // Each text alone, single-threaded.
    std::vector<float> alone(ids.size() * d);
    Workspace plain;
    for (size_t i = 0; i < batch->size(); ++i) {
      const std::vector<int> one = {0, offsets[i + 1] - offsets[i]};
      RunEncoder(model_->encoder(), std::span(ids).subspan(offsets[i], one[1]), one, plain,
                 alone.data() + static_cast<int64_t>(offsets[i]) * d);
    }
    for (int threads : {0, 1, 2, 3}) {
      std::unique_ptr<ThreadPool> pool;
      Workspace workspace;
      if (threads > 0) {
        pool = std::make_unique<ThreadPool>(threads);
        workspace.set_pool(pool.get());
      }
      std::vector<float> states(ids.size() * d, std::numeric_limits<float>::quiet_NaN());
      RunEncoder(model_->encoder(), ids, offsets, workspace, states.data());
      for (size_t k = 0; k < states.size(); ++k) {
        ASSERT_NEAR(states[k], alone[k], 1e-5)
            << (batch == &equal ? "equal lengths" : "one long text") << ", " << threads
            << " threads, row " << k / d << " dimension " << k % d;
      }
    }
  }
}

TEST_F(BertParityTest, LongTextsAreAnErrorUnlessTruncated) {
  std::string text;
  for (int i = 0; i < model_->max_tokens(); ++i) text += "word ";
  absl::StatusOr<std::vector<int32_t>> rejected = model_->Tokenize(text, false, nullptr);
  ASSERT_FALSE(rejected.ok());
  EXPECT_THAT(std::string(rejected.status().message()),
              HasSubstr(absl::StrCat(model_->max_tokens() + 2, " tokens; the limit is ",
                                     model_->max_tokens())));
  bool truncated = false;
  absl::StatusOr<std::vector<int32_t>> cut = model_->Tokenize(text, true, &truncated);
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_TRUE(truncated);
  ASSERT_EQ(static_cast<int>(cut->size()), model_->max_tokens());
  absl::StatusOr<std::vector<int32_t>> fits = model_->Tokenize("word word", false, &truncated);
  ASSERT_TRUE(fits.ok());
  EXPECT_FALSE(truncated);
  EXPECT_EQ(fits->size(), 4u);
  EXPECT_EQ(cut->front(), fits->front());  // [CLS]
  EXPECT_EQ(cut->back(), fits->back());    // [SEP]
}

// Copies the fixture's model to a temporary directory, edits config.json, loads it.
absl::Status LoadEdited(const std::string& name, const std::string& key,
                        const nlohmann::json& value) {
  const std::string dir = testing::MakeTempDir(name);
  std::filesystem::copy(
      JoinPath(FixtureDir(), "model"), dir,
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  nlohmann::json config = *ReadJsonFile(JoinPath(dir, "config.json"));
  config[key] = value;
  testing::WriteFile(JoinPath(dir, "config.json"), config.dump());
  return LoadEmbeddingModel(dir).status();
}

TEST_F(BertParityTest, ErrorsNameTheFileTheTensorAndWhatIsSupported) {
  const absl::Status roberta = LoadEdited("roberta", "model_type", "roberta");
  EXPECT_THAT(std::string(roberta.message()),
              ::testing::AllOf(HasSubstr("config.json"), HasSubstr("\"roberta\""),
                               HasSubstr("supported: \"bert\"")));
  const absl::Status gpt = LoadEdited("gpt2", "model_type", "gpt2");
  EXPECT_THAT(std::string(gpt.message()), HasSubstr("model_type \"gpt2\" is not supported"));
  const int layers = ReadJsonFile(JoinPath(JoinPath(FixtureDir(), "model"), "config.json"))
                         ->at("num_hidden_layers")
                         .get<int>();
  const absl::Status deeper = LoadEdited("deeper", "num_hidden_layers", layers + 1);
  EXPECT_THAT(std::string(deeper.message()),
              ::testing::AllOf(HasSubstr("model.safetensors"),
                               HasSubstr(absl::StrCat("encoder.layer.", layers,
                                                      ".attention.self.query.weight"))));
  const absl::Status larger = LoadEdited("larger", "vocab_size", 30523);
  EXPECT_THAT(std::string(larger.message()),
              ::testing::AllOf(HasSubstr("model.safetensors"),
                               HasSubstr("embeddings.word_embeddings.weight")));
}

TEST(EmbeddingModelTest, TranslationEncoderThroughTheSameApi) {
  const std::string dir = testing::ArenModel("v2/aren-transliteration");
  absl::StatusOr<std::unique_ptr<EmbeddingModel>> model = LoadEmbeddingModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<std::unique_ptr<TranslationModel>> translation = LoadTranslationModel(dir);
  ASSERT_TRUE(translation.ok());
  EXPECT_EQ((*model)->dimension(), translation.value()->transformer->config.d_model);
  EXPECT_EQ((*model)->pooling(), Pooling::kMean);
  EXPECT_FALSE((*model)->normalizes());

  std::vector<std::vector<int32_t>> inputs;
  for (const char* text : {"آ ت ز م و ن", "ب", "ك ت ا ب ك ب ي ر"}) {
    absl::StatusOr<std::vector<int32_t>> ids = (*model)->Tokenize(text, false, nullptr);
    ASSERT_TRUE(ids.ok()) << ids.status();
    absl::StatusOr<std::vector<int32_t>> direct = translation.value()->EncodeText(text);
    ASSERT_TRUE(direct.ok());
    EXPECT_EQ(*ids, *direct);
    inputs.push_back(*ids);
  }
  const int d = (*model)->dimension();
  Workspace workspace;
  std::vector<float> out(inputs.size() * d);
  (*model)->Embed(inputs, workspace, out.data());
  std::vector<int32_t> ids;
  std::vector<int> offsets = {0};
  for (const auto& input : inputs) {
    ids.insert(ids.end(), input.begin(), input.end());
    offsets.push_back(static_cast<int>(ids.size()));
  }
  std::vector<float> expected(inputs.size() * d);
  Workspace other;
  MeanPooledEncoderEmbeddings(*translation.value()->transformer, ids, offsets, false, other,
                              expected.data());
  for (size_t k = 0; k < expected.size(); ++k) EXPECT_FLOAT_EQ(out[k], expected[k]);

  absl::StatusOr<std::vector<int32_t>> empty = (*model)->Tokenize("  ", false, nullptr);
  EXPECT_FALSE(empty.ok());
}

TEST(EmbeddingModelTest, PoolingModes) {
  // Two sentences of dimension 2: rows (1, -2), (3, 4) and (0, 5).
  const std::vector<float> states = {1, -2, 3, 4, 0, 5};
  const std::vector<int> offsets = {0, 2, 3};
  std::vector<float> out(4);
  PoolStates(states.data(), offsets, 2, Pooling::kCls, false, out.data());
  EXPECT_THAT(out, ::testing::ElementsAre(1, -2, 0, 5));
  PoolStates(states.data(), offsets, 2, Pooling::kMean, false, out.data());
  EXPECT_THAT(out, ::testing::ElementsAre(2, 1, 0, 5));
  PoolStates(states.data(), offsets, 2, Pooling::kMax, false, out.data());
  EXPECT_THAT(out, ::testing::ElementsAre(3, 4, 0, 5));
  PoolStates(states.data(), offsets, 2, Pooling::kMax, true, out.data());
  EXPECT_THAT(out, ::testing::ElementsAre(0.6f, 0.8f, 0, 1));
}

TEST(EmbeddingModelTest, MissingDirectoryIsNotFound) {
  absl::StatusOr<std::unique_ptr<EmbeddingModel>> model = LoadEmbeddingModel("/nonexistent/m");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
}

// The same BERT checkpoint saved by torch.save as pytorch_model.bin embeds exactly as the
// safetensors one (ROSETTA_BERT_PYTORCH: a copy of ROSETTA_BERT_FIXTURE's model, made by
// tests/reference/make_pytorch_fixture.py).
TEST(BertPytorchTest, PytorchCheckpointEmbedsLikeSafetensors) {
  const char* fixture = std::getenv("ROSETTA_BERT_FIXTURE");
  const char* pytorch = std::getenv("ROSETTA_BERT_PYTORCH");
  if (fixture == nullptr || pytorch == nullptr) GTEST_SKIP() << "run through ctest";
  ASSERT_FALSE(std::filesystem::exists(JoinPath(pytorch, "model.safetensors")));
  auto a = LoadEmbeddingModel(JoinPath(fixture, "model"));
  auto b = LoadEmbeddingModel(pytorch);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  const std::vector<std::string> texts = {"Hello, world!", "Ünïcödé and CJK 漢字", "x"};
  Workspace workspace;
  for (const std::string& text : texts) {
    auto ids = (*a)->Tokenize(text, false, nullptr);
    ASSERT_TRUE(ids.ok());
    std::vector<float> x((*a)->dimension()), y((*b)->dimension());
    (*a)->Embed(std::span(&*ids, 1), workspace, x.data());
    (*b)->Embed(std::span(&*ids, 1), workspace, y.data());
    EXPECT_EQ(x, y) << text;
  }
}

}  // namespace
}  // namespace rosetta
