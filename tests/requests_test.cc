// Request validation and conversion: UTF-8 checking, option defaults and limits, truncation.
#include "server/requests.h"

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

}  // namespace
}  // namespace rosetta::server
