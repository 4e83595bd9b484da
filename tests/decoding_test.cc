// The decoding step function: batches of mixed lengths and options, sentences joining and leaving
// a running batch, cancellation and capacity, on the real aren-transliteration model.
#include "engine/decoding.h"

#include <random>

#include "engine/model_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::testing::HasSubstr;

class DecodingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LoadTranslationModel(testing::ArenModel("v2/aren-transliteration"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  // Random Arabic-letter sources (ids 3..49 of the source vocabulary) of lengths 1..max_length.
  static std::vector<std::vector<int32_t>> RandomSources(int count, int max_length, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> length(1, max_length);
    std::uniform_int_distribution<int> token(3, 49);
    std::vector<std::vector<int32_t>> sources(count);
    for (auto& source : sources) {
      source.resize(length(rng));
      for (int32_t& id : source) id = token(rng);
    }
    return sources;
  }

  static std::vector<Hypothesis> Alone(const std::vector<int32_t>& source,
                                       const DecodingOptions& options) {
    auto result = TranslateBatch(model_->transformer, {source}, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return (*result)[0];
  }

  static void ExpectSame(const std::vector<Hypothesis>& a, const std::vector<Hypothesis>& b,
                         const std::string& context) {
    ASSERT_EQ(a.size(), b.size()) << context;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].tokens, b[i].tokens) << context << " hypothesis " << i;
      EXPECT_NEAR(a[i].score, b[i].score, 1e-5) << context << " hypothesis " << i;
    }
  }

  static TranslationModel* model_;
};

TranslationModel* DecodingTest::model_ = nullptr;

TEST_F(DecodingTest, BatchOf32MixedLengthsEqualsAlone) {
  const auto sources = RandomSources(32, 24, 7);
  for (int beam : {1, 4}) {
    DecodingOptions options;
    options.beam_size = beam;
    options.num_hypotheses = beam;
    options.max_length = 40;
    for (int threads : {1, 2}) {
      auto batch = TranslateBatch(model_->transformer, sources, options, threads);
      ASSERT_TRUE(batch.ok()) << batch.status();
      for (size_t i = 0; i < sources.size(); ++i) {
        ExpectSame((*batch)[i], Alone(sources[i], options),
                   "beam " + std::to_string(beam) + " threads " + std::to_string(threads) +
                       " sentence " + std::to_string(i));
      }
    }
  }
}

TEST_F(DecodingTest, SentencesJoinAndLeaveARunningBatch) {
  const auto sources = RandomSources(12, 20, 11);
  DecodingBatchOptions batch_options;
  batch_options.max_beams = 64;
  batch_options.cache_pages = 256;
  DecodingBatch batch(model_->transformer, batch_options);

  // Different options per sentence, admitted at different steps.
  std::vector<DecodingOptions> options(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    options[i].beam_size = 1 + static_cast<int>(i % 4);
    options[i].num_hypotheses = options[i].beam_size;
    options[i].max_length = 10 + static_cast<int>(i);
    options[i].min_length = static_cast<int>(i % 3);
    options[i].length_penalty = 0.5f * static_cast<float>(i % 3);
  }
  std::map<DecodingBatch::SequenceId, size_t> index;
  std::map<size_t, std::vector<Hypothesis>> results;
  size_t next = 0;
  int step = 0;
  while (next < sources.size() || !batch.empty()) {
    // Admit two sentences every third step.
    if (step % 3 == 0 && next < sources.size()) {
      std::vector<DecodingBatch::Request> requests;
      for (int k = 0; k < 2 && next + k < sources.size(); ++k) {
        requests.push_back({sources[next + k], options[next + k]});
      }
      auto ids = batch.Admit(requests);
      ASSERT_TRUE(ids.ok()) << ids.status();
      for (size_t k = 0; k < ids->size(); ++k) index[(*ids)[k]] = next + k;
      next += ids->size();
    }
    for (auto& finished : batch.Step())
      results[index[finished.id]] = std::move(finished.hypotheses);
    ++step;
  }
  ASSERT_EQ(results.size(), sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    ExpectSame(results[i], Alone(sources[i], options[i]), "sentence " + std::to_string(i));
  }
  EXPECT_EQ(batch.cache().bytes_in_use(), 0);
  EXPECT_EQ(batch.reserved_beams(), 0);
}

TEST_F(DecodingTest, CancelFreesMemoryAndLeavesOthersUntouched) {
  const auto sources = RandomSources(3, 12, 5);
  DecodingOptions options;
  options.beam_size = 3;
  options.max_length = 30;
  DecodingBatchOptions batch_options;
  batch_options.max_beams = 9;
  batch_options.cache_pages = 3 * 3 * 2;
  DecodingBatch batch(model_->transformer, batch_options);
  std::vector<DecodingBatch::Request> requests;
  for (const auto& s : sources) requests.push_back({s, options});
  auto ids = batch.Admit(requests);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_FALSE(batch.CanAdmit(options));
  batch.Step();
  batch.Step();
  EXPECT_GT(batch.cache().bytes_in_use(), 0);
  EXPECT_TRUE(batch.Cancel((*ids)[1]));
  EXPECT_FALSE(batch.Cancel((*ids)[1]));
  EXPECT_TRUE(batch.CanAdmit(options));
  std::map<DecodingBatch::SequenceId, std::vector<Hypothesis>> results;
  while (!batch.empty()) {
    for (auto& f : batch.Step()) results[f.id] = std::move(f.hypotheses);
  }
  EXPECT_EQ(results.count((*ids)[1]), 0u);
  ExpectSame(results[(*ids)[0]], Alone(sources[0], options), "sentence 0");
  ExpectSame(results[(*ids)[2]], Alone(sources[2], options), "sentence 2");
  EXPECT_EQ(batch.cache().bytes_in_use(), 0);
}

TEST_F(DecodingTest, BestTokensFollowGreedyDecoding) {
  const auto sources = RandomSources(2, 10, 11);
  DecodingOptions options;
  options.beam_size = 1;
  DecodingBatchOptions batch_options;
  batch_options.cache_pages = 64;
  DecodingBatch batch(model_->transformer, batch_options);
  std::vector<DecodingBatch::Request> requests;
  for (const auto& s : sources) requests.push_back({s, options});
  auto ids = batch.Admit(requests);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_NE(batch.BestTokens((*ids)[0]), nullptr);
  EXPECT_TRUE(batch.BestTokens((*ids)[0])->empty());
  EXPECT_EQ(batch.BestTokens(12345), nullptr);
  std::vector<int32_t> seen;
  std::vector<Hypothesis> result;
  while (!batch.empty()) {
    for (auto& f : batch.Step()) {
      if (f.id == (*ids)[0]) result = f.hypotheses;
    }
    if (const auto* tokens = batch.BestTokens((*ids)[0])) {
      // Greedy output only grows: each step extends the previous prefix by one token.
      ASSERT_EQ(tokens->size(), seen.size() + 1);
      ASSERT_TRUE(std::equal(seen.begin(), seen.end(), tokens->begin()));
      seen = *tokens;
    }
  }
  ASSERT_EQ(result.size(), 1u);
  // The final hypothesis is the streamed prefix (EOS is not a token of either).
  EXPECT_EQ(result[0].tokens, seen);
  EXPECT_EQ(batch.free_beams(), batch_options.max_beams);
  EXPECT_EQ(batch.free_pages(), 64);
}

TEST_F(DecodingTest, AdmissionIsBoundedByBeamsAndCache) {
  DecodingOptions options;
  options.beam_size = 4;
  options.max_length = 64;  // 4 pages of 16 steps per beam
  DecodingBatchOptions batch_options;
  batch_options.max_beams = 8;
  batch_options.cache_pages = 20;
  DecodingBatch batch(model_->transformer, batch_options);
  EXPECT_EQ(batch.PagesFor(options), 16);
  const std::vector<DecodingBatch::Request> one = {{{3, 4, 5}, options}};
  ASSERT_TRUE(batch.Admit(one).ok());
  EXPECT_FALSE(batch.CanAdmit(options));  // cache: 4 pages left
  const absl::Status status = batch.Admit(one).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("pages"));
  DecodingOptions short_options = options;
  short_options.max_length = 16;  // 4 pages
  EXPECT_TRUE(batch.CanAdmit(short_options));
  // A failed admission admits nothing.
  const std::vector<DecodingBatch::Request> two = {{{3}, short_options}, {{4}, short_options}};
  EXPECT_FALSE(batch.Admit(two).ok());
  EXPECT_EQ(batch.num_sentences(), 1);
}

TEST_F(DecodingTest, InvalidRequestsAreRejected) {
  DecodingBatchOptions batch_options;
  batch_options.cache_pages = 64;
  DecodingBatch batch(model_->transformer, batch_options);
  DecodingOptions options;
  auto admit = [&](std::vector<int32_t> ids, DecodingOptions o) {
    const std::vector<DecodingBatch::Request> r = {{std::move(ids), o}};
    return batch.Admit(r).status();
  };
  EXPECT_THAT(admit({}, options).message(), HasSubstr("no tokens"));
  EXPECT_THAT(admit({3, 51}, options).message(), HasSubstr("source token id 51"));
  EXPECT_THAT(admit({3, -1}, options).message(), HasSubstr("source token id -1"));
  std::vector<int32_t> long_source(2000, 3);
  EXPECT_THAT(admit(long_source, options).message(), HasSubstr("at most"));
  DecodingOptions bad = options;
  bad.beam_size = 0;
  EXPECT_THAT(admit({3}, bad).message(), HasSubstr("beam_size"));
  bad = options;
  bad.num_hypotheses = 3;
  EXPECT_THAT(admit({3}, bad).message(), HasSubstr("num_hypotheses"));
  bad = options;
  bad.min_length = 300;
  EXPECT_THAT(admit({3}, bad).message(), HasSubstr("min_length"));
  bad = options;
  bad.max_length = 0;
  EXPECT_THAT(admit({3}, bad).message(), HasSubstr("max_length"));
  bad = options;
  bad.length_penalty = std::nanf("");
  EXPECT_THAT(admit({3}, bad).message(), HasSubstr("length_penalty"));
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(batch.cache().bytes_in_use(), 0);
}

TEST_F(DecodingTest, StepOnEmptyBatchDoesNothing) {
  DecodingBatchOptions batch_options;
  batch_options.cache_pages = 4;
  DecodingBatch batch(model_->transformer, batch_options);
  EXPECT_TRUE(batch.Step().empty());
}

TEST(ValidateDecodingOptions, AcceptsDefaults) {
  EXPECT_TRUE(ValidateDecodingOptions(DecodingOptions{}, 256).ok());
  DecodingOptions o;
  o.max_length = 300;
  EXPECT_FALSE(ValidateDecodingOptions(o, 256).ok());
}

}  // namespace
}  // namespace rosetta
