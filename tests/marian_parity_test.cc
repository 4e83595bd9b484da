// Parity of the engine with an independent PyTorch implementation of Hugging Face MarianMT
// (tests/reference/marian_reference.py) on a random checkpoint it wrote in Hugging Face layout.
// The fixture directory comes from ROSETTA_MARIAN_FIXTURE (set by CTest; see
// tests/reference/make_marian_fixture.sh).
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/decoding.h"
#include "engine/file_util.h"
#include "engine/model_loader.h"
#include "engine/safetensors.h"
#include "engine/transformer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rosetta {
namespace {

// Tolerances of the issue: encoder output and first-step logits within 1e-4 relative (to the
// largest magnitude of the tensor); scores of the same tokens within 1e-4 relative to the scale
// of the logits they are computed from (a log-probability is a logit minus the log-sum-exp of
// the logits, so a relative error e of logits of magnitude L moves it by up to about e * L: with
// logits near 40, 1e-4 relative allows 4e-3 per token).
constexpr double kRelativeTolerance = 1e-4;
// A divergence right after a near-tie of the reference is acceptable.
constexpr double kNearTie = 1e-4;

class MarianParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* dir = std::getenv("ROSETTA_MARIAN_FIXTURE");
    ASSERT_NE(dir, nullptr) << "ROSETTA_MARIAN_FIXTURE is not set";
    fixture_ = new std::string(dir);
    auto model = LoadTranslationModel(JoinPath(*fixture_, "model"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    auto reference = ReadJsonFile(JoinPath(*fixture_, "reference.json"));
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = new nlohmann::json(std::move(*reference));
    auto tensors = ReadSafetensors(JoinPath(*fixture_, "reference.safetensors"));
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    tensors_ = tensors->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete reference_;
    delete tensors_;
    delete fixture_;
  }

  static const nlohmann::json& cases() { return (*reference_)["cases"]; }
  static std::vector<int32_t> Source(const nlohmann::json& c) {
    return c["source_ids"].get<std::vector<int32_t>>();
  }
  static std::vector<float> Expected(const std::string& name) {
    auto t = tensors_->ReadFloat(name, {});
    EXPECT_TRUE(t.ok()) << t.status();
    return std::vector<float>(t->begin(), t->end());
  }

  static void ExpectClose(const float* got, const std::vector<float>& want,
                          const std::string& what) {
    double max_abs = 0.0, max_diff = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      max_abs = std::max(max_abs, std::abs(static_cast<double>(want[i])));
      max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
    }
    EXPECT_LE(max_diff, kRelativeTolerance * std::max(max_abs, 1e-6))
        << what << ": max |diff| " << max_diff << " for max |value| " << max_abs;
  }

  // Compares our tokens with the reference's; a divergence is tolerated only right after a
  // near-tie of the reference (gaps[t] < kNearTie at the first differing step t).
  // Tolerance of case i's scores: kRelativeTolerance of its logits' scale (the largest
  // magnitude of its first-step logits) or of the score, whichever is larger.
  static double ScoreTolerance(size_t i, double want_score) {
    double scale = 1.0;
    for (float v : Expected(absl::StrCat("first_step_logits.", i))) {
      scale = std::max(scale, std::abs(static_cast<double>(v)));
    }
    return kRelativeTolerance * std::max(scale, std::abs(want_score));
  }

  static void ExpectSameTokens(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                               const std::vector<double>& gaps, float got_score, double want_score,
                               double score_tolerance, const std::string& what) {
    size_t t = 0;
    while (t < got.size() && t < want.size() && got[t] == want[t]) ++t;
    if (t == got.size() && t == want.size()) {
      EXPECT_NEAR(got_score, want_score, score_tolerance) << what;
      return;
    }
    ASSERT_LT(t, gaps.size()) << what << ": diverges at step " << t << " with no gap recorded";
    EXPECT_LT(gaps[t], kNearTie) << what << ": diverges at step " << t << " where the reference's "
                                 << "top-two gap is " << gaps[t];
    ++near_tie_divergences_;
  }

  static std::string* fixture_;
  static TranslationModel* model_;
  static nlohmann::json* reference_;
  static TensorFile* tensors_;
  static int near_tie_divergences_;
};

std::string* MarianParityTest::fixture_ = nullptr;
TranslationModel* MarianParityTest::model_ = nullptr;
nlohmann::json* MarianParityTest::reference_ = nullptr;
TensorFile* MarianParityTest::tensors_ = nullptr;
int MarianParityTest::near_tie_divergences_ = 0;

// Tied embeddings, whether the checkpoint stores them once (model.shared, read for both sides
// and the projection) or under every name (both embed_tokens and lm_head as well): the loaded
// model holds one table.
TEST_F(MarianParityTest, TiedEmbeddingsAreHeldOnce) {
  const TransformerModel& m = *model_->transformer;
  auto tensors = ReadSafetensors(JoinPath(*fixture_, "model/model.safetensors"));
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_TRUE((*tensors)->Contains("model.shared.weight"));
  EXPECT_EQ(m.decoder_embeddings.table, m.encoder_embeddings.table);
  if (m.output_projection.weight != nullptr) {
    EXPECT_EQ(m.output_projection.weight, m.decoder_embeddings.table);
  }
}

TEST_F(MarianParityTest, EncoderOutputAloneAndBatched) {
  const TransformerModel& m = *model_->transformer;
  const int d = m.config.d_model;
  std::vector<int32_t> all_ids;
  std::vector<int> offsets = {0};
  for (const auto& c : cases()) {
    const std::vector<int32_t> ids = Source(c);
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    offsets.push_back(static_cast<int>(all_ids.size()));
  }
  Workspace ws;
  std::vector<float> batched(all_ids.size() * d);
  RunEncoder(m, all_ids, offsets, ws, batched.data());
  for (size_t i = 0; i < cases().size(); ++i) {
    const std::vector<int32_t> ids = Source(cases()[i]);
    const std::vector<float> want = Expected(absl::StrCat("encoder_output.", i));
    ASSERT_EQ(want.size(), ids.size() * d);
    std::vector<float> alone(ids.size() * d);
    const std::vector<int> one = {0, static_cast<int>(ids.size())};
    RunEncoder(m, ids, one, ws, alone.data());
    ExpectClose(alone.data(), want, absl::StrCat("case ", i, " alone"));
    ExpectClose(batched.data() + static_cast<size_t>(offsets[i]) * d, want,
                absl::StrCat("case ", i, " batched"));
  }
}

TEST_F(MarianParityTest, FirstStepLogits) {
  const TransformerModel& m = *model_->transformer;
  const int d = m.config.d_model;
  const int vocab = m.target_vocab_size();
  DecoderCache cache({static_cast<int>(m.decoder_layers.size()), d, 16, 1});
  Workspace ws;
  for (size_t i = 0; i < cases().size(); ++i) {
    const std::vector<int32_t> ids = Source(cases()[i]);
    const std::vector<int> offsets = {0, static_cast<int>(ids.size())};
    std::vector<float> encoded(ids.size() * d);
    RunEncoder(m, ids, offsets, ws, encoded.data());
    std::vector<float> memory(CrossMemoryFloats(m, static_cast<int>(ids.size())));
    float* memories[] = {memory.data()};
    ComputeCrossMemory(m, encoded.data(), offsets, memories, ws);
    const int slot = *cache.AcquireSlot(1);
    cache.PrepareStep(slot, 0);
    const int64_t history[] = {cache.RowOffset(slot, 0)};
    DecoderRow row{m.config.decoder_start_id, 0, history, memory.data(),
                   static_cast<int>(ids.size())};
    std::vector<float> logits(vocab);
    RunDecoderStep(m, {&row, 1}, cache, ws, logits.data());
    cache.ReleaseSlot(slot);
    ExpectClose(logits.data(), Expected(absl::StrCat("first_step_logits.", i)),
                absl::StrCat("case ", i));
  }
}

DecodingOptions OptionsOf(const nlohmann::json& o, int beam_size, int num_hypotheses) {
  DecodingOptions options;
  options.beam_size = beam_size;
  options.num_hypotheses = num_hypotheses;
  options.max_length = o["max_length"].get<int>();
  options.min_length = o["min_length"].get<int>();
  options.length_penalty = o["length_penalty"].get<float>();
  return options;
}

TEST_F(MarianParityTest, GreedySearchInOneBatch) {
  std::vector<std::vector<int32_t>> sources;
  for (const auto& c : cases()) sources.push_back(Source(c));
  // Option sets: "greedy" and each of "greedy_variants" (the same for every case).
  std::vector<nlohmann::json> option_sets = {cases()[0]["greedy"]};
  for (const auto& v : cases()[0]["greedy_variants"]) option_sets.push_back(v);
  for (size_t s = 0; s < option_sets.size(); ++s) {
    const DecodingOptions options = OptionsOf(option_sets[s], 1, 1);
    auto results = TranslateBatch(model_->transformer, sources, options, 2);
    ASSERT_TRUE(results.ok()) << results.status();
    for (size_t i = 0; i < sources.size(); ++i) {
      const nlohmann::json& want =
          s == 0 ? cases()[i]["greedy"] : cases()[i]["greedy_variants"][s - 1];
      ASSERT_EQ(want["max_length"], option_sets[s]["max_length"]);
      const Hypothesis& got = (*results)[i][0];
      ExpectSameTokens(got.tokens, want["tokens"].get<std::vector<int32_t>>(),
                       want["top2_gaps"].get<std::vector<double>>(), got.score,
                       want["score"].get<double>(), ScoreTolerance(i, want["score"].get<double>()),
                       absl::StrCat("greedy option set ", s, " case ", i));
    }
  }
}

TEST_F(MarianParityTest, BeamSearchInOneBatch) {
  std::vector<std::vector<int32_t>> sources;
  for (const auto& c : cases()) sources.push_back(Source(c));
  const size_t sets = cases()[0]["beam"].size();
  ASSERT_GT(sets, 0u);
  int compared = 0, skipped = 0;
  for (size_t s = 0; s < sets; ++s) {
    const nlohmann::json& first = cases()[0]["beam"][s];
    const DecodingOptions options =
        OptionsOf(first, first["beam_size"].get<int>(), first["num_hypotheses"].get<int>());
    auto results = TranslateBatch(model_->transformer, sources, options, 2);
    ASSERT_TRUE(results.ok()) << results.status();
    for (size_t i = 0; i < sources.size(); ++i) {
      const nlohmann::json& want = cases()[i]["beam"][s];
      // A near-tie anywhere among the candidates may legitimately reorder hypotheses.
      if (want["min_candidate_gap"].get<double>() < kNearTie) {
        ++skipped;
        continue;
      }
      ++compared;
      const std::vector<Hypothesis>& got = (*results)[i];
      ASSERT_EQ(got.size(), want["hypotheses"].size()) << "beam set " << s << " case " << i;
      for (size_t h = 0; h < got.size(); ++h) {
        const auto& wh = want["hypotheses"][h];
        EXPECT_EQ(got[h].tokens, wh["tokens"].get<std::vector<int32_t>>())
            << "beam set " << s << " case " << i << " hypothesis " << h;
        EXPECT_NEAR(got[h].score, wh["score"].get<double>(),
                    ScoreTolerance(i, wh["score"].get<double>()))
            << "beam set " << s << " case " << i << " hypothesis " << h;
      }
    }
  }
  // The comparison must not be vacuous.
  EXPECT_GT(compared, skipped) << compared << " compared, " << skipped << " skipped for near-ties";
}

TEST_F(MarianParityTest, TokenizerMatchesReference) {
  auto expected = ReadJsonFile(JoinPath(*fixture_, "tokenize.json"));
  ASSERT_TRUE(expected.ok()) << expected.status();
  int cases_checked = 0;
  for (const auto& c : (*expected)["cases"]) {
    auto ids = model_->EncodeText(c["text"].get<std::string>());
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << c["text"];
    ++cases_checked;
  }
  EXPECT_GE(cases_checked, 40);
  for (const auto& c : (*expected)["decode_cases"]) {
    EXPECT_EQ(model_->DecodeText(c["ids"].get<std::vector<int32_t>>()),
              c["text"].get<std::string>());
  }
  // Text cases of reference.json went through the same tokenizer.
  for (const auto& c : cases()) {
    if (c["kind"] != "text") continue;
    auto ids = model_->EncodeText(c["text"].get<std::string>());
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, Source(c));
  }
}

}  // namespace
}  // namespace rosetta
