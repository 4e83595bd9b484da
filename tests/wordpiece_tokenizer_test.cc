// WordPieceTokenizer: Hugging Face's own BertTokenizer test expectations, then id-for-id parity
// with the Python reference (tests/reference/bert_tokenizer_reference.py) on tricky strings with
// the real bert-base-uncased vocabulary, in its uncased and cased configurations.
#include "engine/wordpiece_tokenizer.h"

#include <cstdlib>

#include "engine/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

WordPieceTokenizer Make(std::vector<std::string> vocab, WordPieceOptions options = {}) {
  absl::StatusOr<WordPieceTokenizer> tokenizer =
      WordPieceTokenizer::Create(Vocabulary(std::move(vocab)), options, "test vocab");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

std::vector<std::string> Pieces(const WordPieceTokenizer& tokenizer, absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> pieces = tokenizer.Tokenize(text);
  EXPECT_TRUE(pieces.ok()) << pieces.status();
  return pieces.ok() ? *pieces : std::vector<std::string>{"<error>"};
}

// The vocabulary of Hugging Face's test_tokenization_bert.py.
std::vector<std::string> HfTestVocab() {
  return {"[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "want", "##want", "##ed",
          "wa",    "un",    "runn",  "##ing", ",",      "low",  "lowest"};
}

// A vocabulary holding `words` whole, so the pieces show the basic tokenizer's words (what Hugging
// Face's BasicTokenizer tests check).
std::vector<std::string> WordsVocab(const std::vector<std::string>& words) {
  std::vector<std::string> vocab = {"[UNK]", "[CLS]", "[SEP]"};
  for (const std::string& w : words) vocab.push_back(w);
  return vocab;
}

TEST(WordPieceTokenizerTest, HuggingFaceFullTokenizer) {
  const WordPieceTokenizer tokenizer = Make(HfTestVocab());
  EXPECT_THAT(Pieces(tokenizer, "UNwant\u00E9d,running"),
              ElementsAre("un", "##want", "##ed", ",", "runn", "##ing"));
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode("UNwant\u00E9d,running");
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(9, 6, 7, 12, 10, 11));
}

TEST(WordPieceTokenizerTest, HuggingFaceBasicTokenizerLowerAndAccents) {
  const std::vector<std::string> words = {"hello", "!", "how", "are", "you", "?", "hallo"};
  const WordPieceTokenizer lower = Make(WordsVocab(words));
  EXPECT_THAT(Pieces(lower, " \tHeLLo!how  \n Are yoU?  "),
              ElementsAre("hello", "!", "how", "are", "you", "?"));
  EXPECT_THAT(Pieces(lower, "H\u00E9llo"), ElementsAre("hello"));
  EXPECT_THAT(Pieces(lower, " \tH\u00E4LLo!how  \n Are yoU?  "),
              ElementsAre("hallo", "!", "how", "are", "you", "?"));

  WordPieceOptions keep_accents;
  keep_accents.strip_accents = false;
  const WordPieceTokenizer lower_keep =
      Make(WordsVocab({"h\u00E4llo", "h\u00E9llo", "!", "how", "are", "you", "?"}), keep_accents);
  EXPECT_THAT(Pieces(lower_keep, " \tH\u00E4LLo!how  \n Are yoU?  "),
              ElementsAre("h\u00E4llo", "!", "how", "are", "you", "?"));
  EXPECT_THAT(Pieces(lower_keep, "H\u00E9llo"), ElementsAre("h\u00E9llo"));

  WordPieceOptions cased;
  cased.lower_case = false;
  const WordPieceTokenizer no_lower =
      Make(WordsVocab({"HeLLo", "H\u00E4LLo", "HaLLo", "!", "how", "Are", "yoU", "?"}), cased);
  EXPECT_THAT(Pieces(no_lower, " \tHeLLo!how  \n Are yoU?  "),
              ElementsAre("HeLLo", "!", "how", "Are", "yoU", "?"));
  EXPECT_THAT(Pieces(no_lower, " \tH\u00E4LLo!how  \n Are yoU?  "),
              ElementsAre("H\u00E4LLo", "!", "how", "Are", "yoU", "?"));
  cased.strip_accents = true;
  const WordPieceTokenizer no_lower_strip =
      Make(WordsVocab({"HaLLo", "!", "how", "Are", "yoU", "?"}), cased);
  EXPECT_THAT(Pieces(no_lower_strip, " \tH\u00E4LLo!how  \n Are yoU?  "),
              ElementsAre("HaLLo", "!", "how", "Are", "yoU", "?"));
}

TEST(WordPieceTokenizerTest, HuggingFacePunctuationChineseAndControls) {
  const WordPieceTokenizer punct =
      Make(WordsVocab({"a", "'", "ll", "!", "to", "?", "d", "of", ",", "can", "t", ".", "$", "`",
                       "-", "ah", "zz", "\u535A", "\u63A8"}));
  EXPECT_THAT(
      Pieces(punct, "a\n'll !!to?'d of, can't."),
      ElementsAre("a", "'", "ll", "!", "!", "to", "?", "'", "d", "of", ",", "can", "'", "t", "."));
  // ASCII symbols count as punctuation ($ and ` are Sc and Sk in Unicode).
  EXPECT_THAT(Pieces(punct, "a$a`a-a"), ElementsAre("a", "$", "a", "`", "a", "-", "a"));
  EXPECT_THAT(Pieces(punct, "ah\u535A\u63A8zz"), ElementsAre("ah", "\u535A", "\u63A8", "zz"));
  // Left-to-right and right-to-left marks are format characters: dropped.
  EXPECT_THAT(Pieces(punct, "\u200E\u200F"), IsEmpty());
  // Hugging Face's test_clean_text: a soft hyphen alone gives no tokens.
  const WordPieceTokenizer hf = Make(HfTestVocab());
  EXPECT_THAT(Pieces(hf, "Test"), ElementsAre("[UNK]"));
  EXPECT_THAT(Pieces(hf, "\xC2\xAD"), IsEmpty());

  const std::vector<std::string> chinese = {"[UNK]",  "[CLS]",  "[SEP]",    "\u7684",
                                            "\u4eba", "\u6709", "##\u4eba", "##\u6709"};
  EXPECT_THAT(Pieces(Make(chinese), "\u7684\u4eba\u6709"),
              ElementsAre("\u7684", "\u4eba", "\u6709"));
  WordPieceOptions no_chinese;
  no_chinese.tokenize_chinese_chars = false;
  EXPECT_THAT(Pieces(Make(chinese, no_chinese), "\u7684\u4eba\u6709"),
              ElementsAre("\u7684", "##\u4eba", "##\u6709"));
}

TEST(WordPieceTokenizerTest, HuggingFaceWordPiece) {
  const WordPieceTokenizer tokenizer =
      Make({"[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing"});
  EXPECT_THAT(Pieces(tokenizer, ""), IsEmpty());
  EXPECT_THAT(Pieces(tokenizer, "unwanted running"),
              ElementsAre("un", "##want", "##ed", "runn", "##ing"));
  EXPECT_THAT(Pieces(tokenizer, "unwantedX running"), ElementsAre("[UNK]", "runn", "##ing"));
}

TEST(WordPieceTokenizerTest, LongWordsAreUnknownAtTheirCodePointCount) {
  const WordPieceTokenizer tokenizer = Make({"[UNK]", "[CLS]", "[SEP]", "a", "##a"});
  EXPECT_EQ(Pieces(tokenizer, std::string(100, 'a')).size(), 100u);
  EXPECT_THAT(Pieces(tokenizer, std::string(101, 'a')), ElementsAre("[UNK]"));
  WordPieceOptions short_words;
  short_words.max_input_chars_per_word = 3;
  EXPECT_THAT(Pieces(Make({"[UNK]", "[CLS]", "[SEP]", "a", "##a"}, short_words), "aaa aaaa"),
              ElementsAre("a", "##a", "##a", "[UNK]"));
}

TEST(WordPieceTokenizerTest, RejectsInvalidUtf8AndMissingSpecialTokens) {
  const WordPieceTokenizer tokenizer = Make(HfTestVocab());
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode("ok \xC3\x28 bad");
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(std::string(ids.status().message()), ::testing::HasSubstr("UTF-8"));

  absl::StatusOr<WordPieceTokenizer> missing =
      WordPieceTokenizer::Create(Vocabulary({"[UNK]", "[CLS]", "a"}), {}, "/m/vocab.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(
      std::string(missing.status().message()),
      ::testing::AllOf(::testing::HasSubstr("/m/vocab.txt"), ::testing::HasSubstr("[SEP]")));
}

// Parity with the Python reference on tests/reference/wordpiece_texts.json (fixture written by
// the wordpiece_reference CTest test; the path comes in ROSETTA_WORDPIECE_FIXTURE).
TEST(WordPieceTokenizerTest, MatchesReferenceOnTrickyStrings) {
  const char* fixture = std::getenv("ROSETTA_WORDPIECE_FIXTURE");
  if (fixture == nullptr) GTEST_SKIP() << "ROSETTA_WORDPIECE_FIXTURE is not set (run with ctest)";
  absl::StatusOr<nlohmann::json> expected = ReadJsonFile(fixture);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const std::string vocab_path = (*expected)["vocab"].get<std::string>();
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(vocab_path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  ASSERT_EQ(vocab->size(), 30522);
  int checked = 0;
  for (bool lower_case : {true, false}) {
    WordPieceOptions options;
    options.lower_case = lower_case;
    absl::StatusOr<WordPieceTokenizer> tokenizer =
        WordPieceTokenizer::Create(*vocab, options, vocab_path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    for (const auto& c : (*expected)["cases"]) {
      if (c["lower_case"].get<bool>() != lower_case) continue;
      const std::string text = c["text"].get<std::string>();
      absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text);
      ASSERT_TRUE(ids.ok()) << ids.status();
      std::vector<int32_t> with_specials = {tokenizer->cls_id()};
      with_specials.insert(with_specials.end(), ids->begin(), ids->end());
      with_specials.push_back(tokenizer->sep_id());
      EXPECT_EQ(with_specials, c["ids"].get<std::vector<int32_t>>())
          << "text " << c["text"].dump() << " lower_case " << lower_case << "\nreference pieces "
          << c["pieces"].dump();
      ++checked;
    }
  }
  EXPECT_GE(checked, 80);
}

}  // namespace
}  // namespace rosetta
