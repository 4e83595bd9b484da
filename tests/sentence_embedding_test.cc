// Mean-pooled encoder embeddings on the real aren-transliteration model: equal to the mean of
// RunEncoder's rows computed here, unit norm when asked, and the same inside a batch as alone.
#include "engine/sentence_embedding.h"

#include <cmath>
#include <random>

#include "engine/model_loader.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

class SentenceEmbeddingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = LoadTranslationModel(testing::ArenModel("v2/aren-transliteration"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    pool_ = std::make_unique<ThreadPool>(2);
    workspace_.set_pool(pool_.get());
  }

  std::vector<float> Embed(const std::vector<std::vector<int32_t>>& sources, bool normalize) {
    std::vector<int32_t> ids;
    std::vector<int> offsets = {0};
    for (const auto& s : sources) {
      ids.insert(ids.end(), s.begin(), s.end());
      offsets.push_back(static_cast<int>(ids.size()));
    }
    std::vector<float> out(sources.size() * d());
    MeanPooledEncoderEmbeddings(*model_->transformer, ids, offsets, normalize, workspace_,
                                out.data());
    return out;
  }

  int d() const { return model_->transformer->config.d_model; }

  std::unique_ptr<TranslationModel> model_;
  std::unique_ptr<ThreadPool> pool_;
  Workspace workspace_;
};

TEST_F(SentenceEmbeddingTest, IsTheMeanOfTheEncoderStates) {
  const std::vector<int32_t> source = {5, 9, 12, 7, 2};
  const std::vector<int> offsets = {0, 5};
  Workspace plain;
  std::vector<float> states(source.size() * d());
  RunEncoder(*model_->transformer, source, offsets, plain, states.data());
  const std::vector<float> embedding = Embed({source}, /*normalize=*/false);
  for (int j = 0; j < d(); ++j) {
    double mean = 0.0;
    for (size_t r = 0; r < source.size(); ++r) mean += states[r * d() + j];
    mean /= source.size();
    EXPECT_NEAR(embedding[j], mean, 1e-5) << "dimension " << j;
  }
}

TEST_F(SentenceEmbeddingTest, NormalizedHasUnitLengthAndSameDirection) {
  const std::vector<int32_t> source = {8, 3, 30, 2};
  const std::vector<float> raw = Embed({source}, false);
  const std::vector<float> unit = Embed({source}, true);
  double norm = 0.0, raw_norm = 0.0;
  for (int j = 0; j < d(); ++j) {
    norm += unit[j] * unit[j];
    raw_norm += raw[j] * raw[j];
  }
  EXPECT_NEAR(norm, 1.0, 1e-5);
  for (int j = 0; j < d(); ++j) EXPECT_NEAR(unit[j], raw[j] / std::sqrt(raw_norm), 1e-5);
}

TEST_F(SentenceEmbeddingTest, BatchEqualsAlone) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> length(1, 40), token(3, 49);
  std::vector<std::vector<int32_t>> sources(32);
  for (auto& s : sources) {
    s.resize(length(rng));
    for (auto& id : s) id = token(rng);
  }
  const std::vector<float> batch = Embed(sources, true);
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::vector<float> alone = Embed({sources[i]}, true);
    for (int j = 0; j < d(); ++j) {
      ASSERT_NEAR(batch[i * d() + j], alone[j], 1e-5) << "sentence " << i << " dimension " << j;
    }
  }
}

}  // namespace
}  // namespace rosetta
