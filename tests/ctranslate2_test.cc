// End-to-end tests on CTranslate2's real aren-transliteration model (../shared), in every format
// variant, against the model's published expectations and CTranslate2's own test oracles.
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ctranslate2_file.h"
#include "engine/ctranslate2_loader.h"
#include "engine/decoding.h"
#include "engine/model_loader.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using testing::ArenModel;
using ::testing::HasSubstr;

const std::vector<std::string> kVariants = {
    "v2/aren-transliteration", "v2/aren-transliteration-i8", "v2/aren-transliteration-i16",
    "v1/aren-transliteration", "v1/aren-transliteration-i16"};

std::unique_ptr<TranslationModel> Load(const std::string& variant) {
  absl::StatusOr<std::unique_ptr<TranslationModel>> model =
      LoadTranslationModel(ArenModel(variant));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

struct Output {
  std::string text;
  float score;
};

std::vector<std::vector<Output>> Translate(const TranslationModel& model,
                                           const std::vector<std::string>& lines,
                                           const DecodingOptions& options) {
  std::vector<std::vector<int32_t>> sources;
  for (const std::string& line : lines) {
    absl::StatusOr<std::vector<int32_t>> ids = model.EncodeText(line);
    EXPECT_TRUE(ids.ok()) << ids.status();
    sources.push_back(*ids);
  }
  auto results = TranslateBatch(model.transformer, sources, options);
  EXPECT_TRUE(results.ok()) << results.status();
  std::vector<std::vector<Output>> outputs;
  for (const auto& hypotheses : *results) {
    outputs.emplace_back();
    for (const Hypothesis& h : hypotheses)
      outputs.back().push_back({model.DecodeText(h.tokens), h.score});
  }
  return outputs;
}

DecodingOptions Greedy() {
  DecodingOptions o;
  o.beam_size = 1;
  return o;
}

class ArenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ArenTest, PublishedExpectations) {
  std::unique_ptr<TranslationModel> model = Load(GetParam());
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(Translate(*model, {"آ ت ز م و ن"}, Greedy())[0][0].text, "a t z m o n");
  DecodingOptions beam2;
  beam2.beam_size = 2;
  EXPECT_EQ(Translate(*model, {"آ ت ز م و ن"}, beam2)[0][0].text, "a t z m o n");
  DecodingOptions max3 = Greedy();
  max3.max_length = 3;
  EXPECT_EQ(Translate(*model, {"آ ت ز م و ن"}, max3)[0][0].text, "a t z");
  // The model's defaults are CTranslate2's: beam 2.
  EXPECT_EQ(Translate(*model, {"آ ت ز م و ن"}, model->default_options)[0][0].text, "a t z m o n");
}

INSTANTIATE_TEST_SUITE_P(AllFormats, ArenTest, ::testing::ValuesIn(kVariants),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Scores CTranslate2 computes for these inputs (greedy, length_penalty 1: sum of log-probs with
// EOS, divided by the length with EOS).
TEST(ArenScores, MatchCTranslate2) {
  struct Case {
    std::string variant;
    std::string input;
    std::string output;
    float score;
  };
  const std::vector<Case> cases = {
      {"v2/aren-transliteration", "آ ت ز م و ن", "a t z m o n", -1.061748f / 7},
      {"v1/aren-transliteration", "آ ت ز م و ن", "a t z m o n", -1.061748f / 7},
      {"v2/aren-transliteration-i8", "آ ت ز م و ن", "a t z m o n", -1.087673f / 7},
      {"v2/aren-transliteration-i16", "آ ت ز م و ن", "a t z m o n", -1.059990f / 7},
      {"v1/aren-transliteration-i16", "آ ت ز م و ن", "a t z m o n", -1.059990f / 7},
      {"v2/aren-transliteration", "آ ز ا", "a z z a", -0.754553f / 5},
      {"v2/aren-transliteration", "آ ت ش ي س و ن", "a c h i s o n", -1.113600f / 8},
  };
  for (const Case& c : cases) {
    std::unique_ptr<TranslationModel> model = Load(c.variant);
    ASSERT_NE(model, nullptr);
    for (int beam : {1, 2, 4}) {
      DecodingOptions options;
      options.beam_size = beam;
      const Output out = Translate(*model, {c.input}, options)[0][0];
      EXPECT_EQ(out.text, c.output) << c.variant << " beam " << beam;
      EXPECT_NEAR(out.score, c.score, 2e-6) << c.variant << " beam " << beam;
    }
  }
}

TEST(ArenSearch, MaxLengthCountsTokensAndScoresWithoutEos) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  DecodingOptions options = Greedy();
  options.max_length = 3;
  const Output three = Translate(*model, {"آ ت ز م و ن"}, options)[0][0];
  EXPECT_EQ(three.text, "a t z");
  EXPECT_NEAR(three.score, -0.227436f / 3, 2e-6);
  options.max_length = 2;
  EXPECT_EQ(Translate(*model, {"آ ت ز م و ن"}, options)[0][0].text, "a t");
  // Exactly six tokens and no room for EOS: the same text, normalised by 6 instead of 7.
  options.max_length = 6;
  const Output six = Translate(*model, {"آ ت ز م و ن"}, options)[0][0];
  EXPECT_EQ(six.text, "a t z m o n");
  EXPECT_LT(six.score, 0.0f);
}

TEST(ArenSearch, MinLengthForbidsEarlyEos) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  for (int beam : {1, 3}) {
    DecodingOptions options;
    options.beam_size = beam;
    options.min_length = 8;
    const Output out = Translate(*model, {"آ ت ز م و ن"}, options)[0][0];
    EXPECT_EQ(std::count(out.text.begin(), out.text.end(), ' ') + 1, 8) << out.text;
  }
}

TEST(ArenSearch, MinEqualsMaxForcesLength) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  DecodingOptions options;
  options.beam_size = 4;
  options.min_length = options.max_length = 10;
  const Output out = Translate(*model, {"آ ت"}, options)[0][0];
  EXPECT_EQ(std::count(out.text.begin(), out.text.end(), ' ') + 1, 10) << out.text;
}

TEST(ArenSearch, NumHypothesesAreDistinctAndSorted) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  DecodingOptions options;
  options.beam_size = 4;
  options.num_hypotheses = 4;
  const std::vector<Output> out = Translate(*model, {"آ ت ز م و ن"}, options)[0];
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].text, "a t z m o n");
  for (size_t i = 1; i < out.size(); ++i) {
    EXPECT_GE(out[i - 1].score, out[i].score);
    for (size_t j = 0; j < i; ++j) EXPECT_NE(out[i].text, out[j].text);
  }
}

TEST(ArenSearch, LengthPenaltyNormalisesScores) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  DecodingOptions options = Greedy();
  options.length_penalty = 0.0f;
  const Output raw = Translate(*model, {"آ ت ز م و ن"}, options)[0][0];
  EXPECT_NEAR(raw.score, -1.061748f, 1e-5);  // unnormalised log-probability
  options.length_penalty = 2.0f;
  const Output squared = Translate(*model, {"آ ت ز م و ن"}, options)[0][0];
  EXPECT_NEAR(squared.score, -1.061748f / 49, 1e-6);
}

TEST(ArenModelInfo, ConventionsFromTheFiles) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  const TransformerModel& t = *model->transformer;
  EXPECT_EQ(t.config.num_heads, 8);
  EXPECT_TRUE(t.config.pre_norm);
  EXPECT_EQ(t.config.encoder_layers, 6);
  EXPECT_EQ(t.config.decoder_layers, 6);
  EXPECT_EQ(t.config.d_model, 32);
  // The vocabularies lack <unk>: it is appended, as CTranslate2 does.
  EXPECT_EQ(model->source_vocabulary.size(), 51);
  EXPECT_EQ(model->target_vocabulary.size(), 43);
  EXPECT_EQ(model->source_unk_id, 50);
  EXPECT_EQ(model->target_vocabulary.Token(t.config.decoder_start_id), "<s>");
  EXPECT_EQ(model->target_vocabulary.Token(t.config.eos_id), "</s>");
  EXPECT_EQ(Load("v2/aren-transliteration-i8")->transformer->config.weight_type, "int8");
  EXPECT_EQ(Load("v1/aren-transliteration-i16")->transformer->config.weight_type, "int16");
}

// Corrupt files: an error that names the file (and the tensor), never a crash.
class CorruptModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("model");
    for (const char* name : {"model.bin", "source_vocabulary.txt", "target_vocabulary.txt"}) {
      std::filesystem::copy_file(ArenModel("v2/aren-transliteration") + "/" + name,
                                 dir_ + "/" + name);
    }
    bytes_ = testing::ReadFile(dir_ + "/model.bin");
  }
  absl::Status LoadStatus() { return LoadTranslationModel(dir_).status(); }
  void WriteModel(const std::string& bytes) { testing::WriteFile(dir_ + "/model.bin", bytes); }

  std::string dir_;
  std::string bytes_;
};

TEST_F(CorruptModelTest, TruncatedAnywhere) {
  for (size_t size : {size_t{0}, size_t{3}, size_t{10}, size_t{31}, size_t{100}, bytes_.size() / 2,
                      bytes_.size() - 1}) {
    WriteModel(bytes_.substr(0, size));
    const absl::Status status = LoadStatus();
    EXPECT_FALSE(status.ok()) << size;
    EXPECT_THAT(status.message(), HasSubstr("model.bin")) << size;
  }
  WriteModel(bytes_.substr(0, bytes_.size() / 2));
  EXPECT_THAT(LoadStatus().message(), HasSubstr("tensor "));
}

TEST_F(CorruptModelTest, TrailingGarbage) {
  WriteModel(bytes_ + "xyz");
  EXPECT_THAT(LoadStatus().message(), HasSubstr("unexpected data"));
}

TEST_F(CorruptModelTest, UnsupportedVersionAndSpec) {
  std::string bytes = bytes_;
  bytes[0] = 42;
  WriteModel(bytes);
  EXPECT_THAT(LoadStatus().message(), HasSubstr("unsupported CTranslate2 binary version 42"));
  bytes = bytes_;
  bytes.replace(6, 11, "WhisperSpec");  // same length as "Transformer" + keep "Base"
  WriteModel(bytes);
  EXPECT_THAT(LoadStatus().message(), HasSubstr("unsupported model spec"));
}

TEST_F(CorruptModelTest, WrongShapeNamesTheTensor) {
  // The first variable is decoder/embeddings/weight [43, 32]: declare [43, 16] and fix the count.
  std::string bytes = bytes_;
  const size_t dims =
      bytes.find("decoder/embeddings/weight") + strlen("decoder/embeddings/weight") + 2;
  bytes[dims + 4] = 16;
  const uint32_t count = 43 * 16;
  std::memcpy(&bytes[dims + 9], &count, 4);
  bytes.erase(dims + 13 + count * 4, (43 * 32 - count) * 4);
  WriteModel(bytes);
  const absl::Status status = LoadStatus();
  EXPECT_THAT(status.message(), HasSubstr("decoder/embeddings/weight"));
  EXPECT_THAT(status.message(), HasSubstr("model.bin"));
}

TEST_F(CorruptModelTest, MissingTensorIsNamed) {
  std::string bytes = bytes_;
  const size_t at = bytes.find("decoder/projection/bias");
  bytes[at + strlen("decoder/projection/")] = 'X';  // "Xias": now an unknown name, bias missing
  WriteModel(bytes);
  absl::StatusOr<std::unique_ptr<TranslationModel>> model = LoadTranslationModel(dir_);
  // The projection bias is optional in CTranslate2: the model loads but differs.
  ASSERT_TRUE(model.ok()) << model.status();
  bytes = bytes_;
  bytes[bytes.find("encoder/layer_3/ffn/linear_1/weight") +
        strlen("encoder/layer_3/ffn/linear_1/")] = 'X';
  WriteModel(bytes);
  EXPECT_THAT(LoadStatus().message(), HasSubstr("encoder/layer_3/ffn/linear_1/weight is missing"));
}

TEST_F(CorruptModelTest, VocabularyMismatch) {
  testing::WriteFile(dir_ + "/target_vocabulary.txt", "<blank>\n<s>\n</s>\na\n");
  EXPECT_THAT(LoadStatus().message(), HasSubstr("target vocabulary has 5 tokens"));
  std::filesystem::remove(dir_ + "/target_vocabulary.txt");
  EXPECT_THAT(LoadStatus().message(), HasSubstr("target_vocabulary"));
}

TEST(ModelLoader, NotADirectory) {
  EXPECT_EQ(LoadTranslationModel("/nonexistent/model").status().code(),
            absl::StatusCode::kNotFound);
  const std::string dir = testing::MakeTempDir("empty");
  EXPECT_THAT(LoadTranslationModel(dir).status().message(),
              HasSubstr("unrecognised model directory"));
}

TEST(ArenTokens, UnknownSourceTokensMapToUnk) {
  std::unique_ptr<TranslationModel> model = Load("v2/aren-transliteration");
  absl::StatusOr<std::vector<int32_t>> ids = model->EncodeText("آ Q ت");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ((*ids)[1], model->source_unk_id);
  EXPECT_EQ(ids->size(), 3u);  // no BOS/EOS for this model
}

// `count` random sources of 1 to 12 of the source vocabulary's Arabic letters (ids 3..49).
std::vector<std::vector<int32_t>> RandomSources(int count, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(1, 12);
  std::uniform_int_distribution<int> letter(3, 49);
  std::vector<std::vector<int32_t>> sources(count);
  for (auto& source : sources) {
    source.resize(length(rng));
    for (int32_t& id : source) id = letter(rng);
  }
  return sources;
}

bool Supported(ComputeType type) {
  return type == ComputeType::kBfloat16 ? PackedBfloat16Supported() : PackedInt8Supported();
}

// Computing in bfloat16 or int8 on the real model (float32 and int8 weights): the published
// expectation holds with about CTranslate2's score, and random sources translate as in float32 but
// for a few near-ties (at least `min_same` of 300), with scores at most `max_difference` from
// float32's and yet not equal to them (the mode is in effect).
void ExpectCloseToFloat32(ComputeType type, int min_same, double max_difference) {
  const std::vector<std::vector<int32_t>> sources = RandomSources(300, 11);
  for (const std::string variant : {"v2/aren-transliteration", "v2/aren-transliteration-i8"}) {
    std::unique_ptr<TranslationModel> f32 = Load(variant);
    absl::StatusOr<std::unique_ptr<TranslationModel>> reduced =
        LoadTranslationModel(ArenModel(variant), {.compute_type = type});
    ASSERT_TRUE(reduced.ok()) << reduced.status();
    EXPECT_EQ((*reduced)->transformer->config.compute_type, type);
    EXPECT_EQ(f32->transformer->config.compute_type, ComputeType::kFloat32);

    const Output published = Translate(**reduced, {"آ ت ز م و ن"}, Greedy())[0][0];
    EXPECT_EQ(published.text, "a t z m o n") << variant;
    EXPECT_NEAR(published.score, -1.061748f / 7, 0.01) << variant;

    auto want = TranslateBatch(f32->transformer, sources, Greedy());
    auto got = TranslateBatch((*reduced)->transformer, sources, Greedy());
    ASSERT_TRUE(want.ok() && got.ok());
    int same = 0;
    double max_score_difference = 0;
    for (size_t i = 0; i < sources.size(); ++i) {
      const Hypothesis& a = (*want)[i][0];
      const Hypothesis& b = (*got)[i][0];
      if (a.tokens != b.tokens) continue;
      ++same;
      max_score_difference = std::max(max_score_difference, std::abs(double{a.score} - b.score));
    }
    std::cout << variant << ": " << ComputeTypeName(type) << " = float32 for " << same << " of "
              << sources.size() << " sources; scores differ by at most " << max_score_difference
              << "\n";
    EXPECT_GE(same, min_same) << variant;
    EXPECT_LT(max_score_difference, max_difference) << variant;
    EXPECT_GT(max_score_difference, 1e-6) << variant;
  }
}

TEST(ArenReducedPrecision, Bfloat16CloseToFloat32) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ExpectCloseToFloat32(ComputeType::kBfloat16, 270, 0.02);  // 295 and 289 when written (Zen 5)
}

TEST(ArenReducedPrecision, Int8CloseToFloat32) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  ExpectCloseToFloat32(ComputeType::kInt8, 250, 0.05);
}

// On AVX-512 CPUs the packed kernel serves every row count in every compute type: a batch of
// 320 decoder rows (past the 256 at which float32 steps once went to OpenBLAS) gives each sentence
// exactly what it gets alone.
void ExpectLargeBatchEqualsAlone(ComputeType type) {
  absl::StatusOr<std::unique_ptr<TranslationModel>> model =
      LoadTranslationModel(ArenModel("v2/aren-transliteration"), {.compute_type = type});
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<std::vector<int32_t>> sources = RandomSources(80, 12);  // x 4 beams: 320 rows
  DecodingOptions options;
  options.beam_size = 4;
  auto together = TranslateBatch((*model)->transformer, sources, options);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < sources.size(); ++i) {
    auto alone = TranslateBatch((*model)->transformer, {sources[i]}, options);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*alone)[0][0].tokens, (*together)[i][0].tokens) << "source " << i;
    EXPECT_EQ((*alone)[0][0].score, (*together)[i][0].score) << "source " << i;
  }
}

TEST(ArenReducedPrecision, Float32LargeBatchEqualsAlone) {
  if (!PackedGemmSupported()) GTEST_SKIP() << "no AVX-512: OpenBLAS multiplies large batches";
  ExpectLargeBatchEqualsAlone(ComputeType::kFloat32);
}

TEST(ArenReducedPrecision, Bfloat16LargeBatchEqualsAlone) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ExpectLargeBatchEqualsAlone(ComputeType::kBfloat16);
}

TEST(ArenReducedPrecision, Int8LargeBatchEqualsAlone) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  ExpectLargeBatchEqualsAlone(ComputeType::kInt8);
}

// bfloat16 and int8 are accepted exactly on CPUs that have AVX512_BF16 and AVX512_VNNI (and with
// the AVX-512 kernels on); elsewhere every loader refuses them with a reason instead of running
// instructions the CPU lacks (the _portable run of this test checks that side).
TEST(ModelLoader, CheckLoadOptions) {
  EXPECT_TRUE(CheckLoadOptions({}).ok());
  for (ComputeType type : {ComputeType::kBfloat16, ComputeType::kInt8}) {
    const absl::Status status = CheckLoadOptions({.compute_type = type});
    EXPECT_EQ(status.ok(), Supported(type));
    if (Supported(type)) continue;
    const std::string needs = absl::StrCat("compute type ", ComputeTypeName(type), " needs");
    EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
    EXPECT_THAT(status.message(), HasSubstr(needs));
    const std::string dir = ArenModel("v2/aren-transliteration");
    EXPECT_THAT(LoadTranslationModel(dir, {.compute_type = type}).status().message(),
                HasSubstr(needs));
    EXPECT_THAT(LoadCt2Model(dir, type).status().message(), HasSubstr(needs));
  }
}

}  // namespace
}  // namespace rosetta
