// Request validation and conversion: UTF-8 checking, option defaults and limits, truncation.
#include "server/requests.h"

#include <cmath>
#include <limits>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::HasSubstr;

TEST(Utf8Test, FindsTheFirstInvalidByte) {
  EXPECT_EQ(InvalidUtf8Offset(""), -1);
  EXPECT_EQ(InvalidUtf8Offset("plain ascii"), -1);
  EXPECT_EQ(InvalidUtf8Offset("ب ت 漢字 😀 é"), -1);
  EXPECT_EQ(InvalidUtf8Offset(std::string("ab\xC3\x28", 4)), 2);        // bad continuation
  EXPECT_EQ(InvalidUtf8Offset(std::string("\xC0\xAF", 2)), 0);          // overlong '/'
  EXPECT_EQ(InvalidUtf8Offset(std::string("x\xED\xA0\x80", 4)), 1);     // UTF-16 surrogate
  EXPECT_EQ(InvalidUtf8Offset(std::string("\xF4\x90\x80\x80", 4)), 0);  // beyond U+10FFFF
  EXPECT_EQ(InvalidUtf8Offset(std::string("ok\xE6\xBC", 4)), 2);        // truncated
  EXPECT_EQ(InvalidUtf8Offset(std::string("\xFF", 1)), 0);
}

class RequestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DaemonOptions options;
    options.models = {{"aren", testing::ArenModel("v2/aren-transliteration")}};
    options.limits.max_tokens_per_text = 6;
    options.batching.max_decoding_length = 100;
    limits_ = options.limits;
    auto registry = ModelRegistry::Load(options, 1);
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
  }
  const ServedModel& model() { return *registry_->Find(""); }

  RequestLimits limits_;
  std::unique_ptr<ModelRegistry> registry_;
};

TEST_F(RequestsTest, UnsetOptionsTakeTheModelDefaults) {
  v1::TranslateRequest request;
  request.add_texts("ب ت");
  auto prepared = PrepareTranslation(request, model(), limits_);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->options.beam_size, model().model->default_options.beam_size);
  EXPECT_EQ(prepared->options.num_hypotheses, 1);
  EXPECT_EQ(prepared->options.max_length, 100);  // the daemon's cap below the model's default
  EXPECT_FALSE(prepared->return_scores);
  request.mutable_options()->set_beam_size(3);
  request.mutable_options()->set_num_hypotheses(2);
  request.mutable_options()->set_length_penalty(0.0f);  // set, even though it is zero
  request.mutable_options()->set_return_scores(true);
  prepared = PrepareTranslation(request, model(), limits_);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->options.beam_size, 3);
  EXPECT_EQ(prepared->options.num_hypotheses, 2);
  EXPECT_EQ(prepared->options.length_penalty, 0.0f);
  EXPECT_TRUE(prepared->return_scores);
  request.mutable_options()->set_max_length(101);
  EXPECT_THAT(PrepareTranslation(request, model(), limits_).status().message(),
              HasSubstr("options.max_length must be between 1 and 100"));
}

TEST_F(RequestsTest, EncodeTruncatesOnlyWhenAsked) {
  v1::EncodeRequest request;
  request.add_texts("ب ت ث ج ح خ د ذ");
  auto refused = PrepareEncode(request, model(), limits_);
  EXPECT_THAT(refused.status().message(), HasSubstr("the limit is 6 (max_tokens_per_text)"));
  EXPECT_THAT(refused.status().message(), HasSubstr("set truncate"));
  request.set_truncate(true);
  auto cut = PrepareEncode(request, model(), limits_);
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_EQ(cut->inputs[0].size(), 6u);
  EXPECT_TRUE(cut->truncated[0]);
  // The cut input equals the first six tokens given alone.
  v1::EncodeRequest shorter;
  shorter.add_texts("ب ت ث ج ح خ");
  auto alone = PrepareEncode(shorter, model(), limits_);
  ASSERT_TRUE(alone.ok());
  EXPECT_EQ(alone->inputs[0], cut->inputs[0]);
  EXPECT_FALSE(alone->truncated[0]);
}

// Random requests, valid and not: every one is either prepared within the limits or refused with
// INVALID_ARGUMENT, never anything else (and, under the sanitizers, never a memory error).
TEST_F(RequestsTest, RandomRequestsArePreparedWithinLimitsOrRefused) {
  std::mt19937 rng(20261122);
  auto pick = [&rng](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  const std::vector<std::string> letters = {"ب", "ت", "ث", "ج", "ح", "خ", "د", "ذ"};
  auto random_text = [&]() -> std::string {
    switch (pick(9)) {
      case 0:
        return "";
      case 1: {  // arbitrary bytes: NULs, invalid UTF-8, control characters
        std::string bytes(pick(40), '\0');
        for (char& c : bytes) c = static_cast<char>(pick(256));
        return bytes;
      }
      case 2:
        return std::string(pick(2000), letters[0][pick(2)]);  // a long run of half-characters
      case 3: {  // valid, and long: past the byte limit at times (64 x 6 tokens)
        std::string text;
        for (int i = pick(3000); i >= 0; --i) text += letters[pick(letters.size())] + " ";
        return text;
      }
      default: {  // mostly within the limit of 6 tokens
        std::string text;
        for (int i = pick(7); i >= 0; --i) text += letters[pick(letters.size())] + " ";
        return text;
      }
    }
  };
  const std::vector<int32_t> ints = {
      std::numeric_limits<int32_t>::min(), -1, 0, 1, 2, 3, 16, 17, 99, 100, 101,
      std::numeric_limits<int32_t>::max()};
  const std::vector<float> penalties = {NAN, INFINITY, -INFINITY, -1.0f, 0.0f, 0.6f, 1.0f, 1e30f};
  int prepared_count = 0;
  int truncated_count = 0;
  for (int round = 0; round < 3000; ++round) {
    SCOPED_TRACE(round);
    const bool encode = pick(3) == 0;
    const bool tokenized = pick(3) == 0;
    const int inputs = pick(20) == 0 ? 129 + pick(3) : pick(4);
    v1::TranslateRequest translate;
    v1::EncodeRequest embed;
    for (int i = 0; i < inputs; ++i) {
      if (tokenized) {
        v1::TokenList* list = encode ? embed.add_tokenized() : translate.add_tokenized();
        for (int t = pick(9); t > 0; --t) {
          list->add_tokens(pick(8) == 0 ? random_text() : letters[pick(letters.size())]);
        }
      } else {
        (encode ? embed.add_texts() : translate.add_texts())->assign(random_text());
      }
    }
    if (pick(8) == 0) (encode ? embed.add_texts() : translate.add_texts())->assign("ب");
    if (encode) {
      embed.set_truncate(pick(2));
      embed.set_normalize(pick(2));
      absl::StatusOr<PreparedEncode> prepared = PrepareEncode(embed, model(), limits_);
      if (!prepared.ok()) {
        EXPECT_TRUE(absl::IsInvalidArgument(prepared.status())) << prepared.status();
        continue;
      }
      ++prepared_count;
      ASSERT_EQ(prepared->inputs.size(),
                static_cast<size_t>(embed.texts_size() + embed.tokenized_size()));
      ASSERT_EQ(prepared->truncated.size(), prepared->inputs.size());
      for (size_t i = 0; i < prepared->inputs.size(); ++i) {
        const auto& input = prepared->inputs[i];
        EXPECT_FALSE(input.empty());
        EXPECT_LE(static_cast<int>(input.size()), model().max_tokens_per_text);
        // Cut to exactly the limit, and only when asked to.
        if (prepared->truncated[i]) {
          ++truncated_count;
          EXPECT_TRUE(embed.truncate());
          EXPECT_EQ(static_cast<int>(input.size()), model().max_tokens_per_text);
        }
      }
      continue;
    }
    v1::TranslateOptions* options = translate.mutable_options();
    if (pick(4) == 0) options->set_beam_size(ints[pick(ints.size())]);
    if (pick(4) == 0) options->set_num_hypotheses(ints[pick(ints.size())]);
    if (pick(4) == 0) options->set_max_length(ints[pick(ints.size())]);
    if (pick(4) == 0) options->set_min_length(ints[pick(ints.size())]);
    if (pick(4) == 0) options->set_length_penalty(penalties[pick(penalties.size())]);
    absl::StatusOr<PreparedTranslation> prepared = PrepareTranslation(translate, model(), limits_);
    if (!prepared.ok()) {
      EXPECT_TRUE(absl::IsInvalidArgument(prepared.status())) << prepared.status();
      EXPECT_FALSE(prepared.status().message().empty());
      continue;
    }
    ++prepared_count;
    EXPECT_EQ(prepared->sources.size(),
              static_cast<size_t>(inputs) +
                  (translate.texts_size() + translate.tokenized_size() - inputs));
    const int vocabulary = model().model->transformer->source_vocab_size();
    for (const auto& source : prepared->sources) {
      EXPECT_FALSE(source.empty());
      EXPECT_LE(static_cast<int>(source.size()), model().max_tokens_per_text);
      for (int32_t id : source) {
        EXPECT_GE(id, 0);
        EXPECT_LT(id, vocabulary);
      }
    }
    const DecodingOptions& o = prepared->options;
    EXPECT_GE(o.beam_size, 1);
    EXPECT_LE(o.beam_size, limits_.max_beam_size);
    EXPECT_GE(o.num_hypotheses, 1);
    EXPECT_LE(o.num_hypotheses, o.beam_size);
    EXPECT_GE(o.max_length, 1);
    EXPECT_LE(o.max_length, 100);
    EXPECT_GE(o.min_length, 0);
    EXPECT_LE(o.min_length, o.max_length);
    EXPECT_TRUE(std::isfinite(o.length_penalty));
    EXPECT_GE(o.length_penalty, 0.0f);
  }
  // Enough of both outcomes for the test to mean something.
  EXPECT_GT(prepared_count, 300);
  EXPECT_GT(truncated_count, 20);
  EXPECT_LT(prepared_count, 2700);
}

}  // namespace
}  // namespace rosetta::server
