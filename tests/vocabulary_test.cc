// Tests of engine/vocabulary.h: the file formats, lookups and their errors.
#include "engine/vocabulary.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::rosetta::testing::MakeTempDir;
using ::rosetta::testing::WriteFile;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string WriteTemp(const std::string& name, const std::string& content) {
  const std::string path = MakeTempDir("vocabulary") + "/" + name;
  WriteFile(path, content);
  return path;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// Every token of `vocab`, in id order.
std::vector<std::string> Tokens(const Vocabulary& vocab) {
  std::vector<std::string> tokens;
  for (int id = 0; id < vocab.size(); ++id) tokens.push_back(vocab.Token(id));
  return tokens;
}

// Checks that Find is the inverse of Token.
void ExpectBijection(const Vocabulary& vocab) {
  for (int id = 0; id < vocab.size(); ++id) {
    EXPECT_EQ(vocab.Find(vocab.Token(id)), id) << "token \"" << vocab.Token(id) << "\"";
  }
}

// ---------------------------------------------------------------------------------------------
// In memory

TEST(VocabularyTest, FindTokenAppend) {
  Vocabulary vocab({"<unk>", "<s>", "</s>", "▁hello", "a b"});
  EXPECT_EQ(vocab.size(), 5);
  EXPECT_EQ(vocab.Find("<unk>"), 0);
  EXPECT_EQ(vocab.Find("</s>"), 2);
  EXPECT_EQ(vocab.Find("▁hello"), 3);
  EXPECT_EQ(vocab.Find("a b"), 4);
  EXPECT_EQ(vocab.Find("hello"), std::nullopt);
  EXPECT_EQ(vocab.Find(""), std::nullopt);
  EXPECT_EQ(vocab.Find("<S>"), std::nullopt);  // case-sensitive
  EXPECT_EQ(vocab.Token(3), "▁hello");

  vocab.Append("<pad>");
  EXPECT_EQ(vocab.size(), 6);
  EXPECT_EQ(vocab.Find("<pad>"), 5);
  EXPECT_EQ(vocab.Token(5), "<pad>");
  vocab.Append("");
  EXPECT_EQ(vocab.Find(""), 6);
  ExpectBijection(vocab);
}

TEST(VocabularyTest, FindTakesAStringViewWithoutTerminator) {
  Vocabulary vocab({"ab", "abc"});
  const std::string text = "abcd";
  EXPECT_EQ(vocab.Find(absl::string_view(text.data(), 2)), 0);
  EXPECT_EQ(vocab.Find(absl::string_view(text.data(), 3)), 1);
  EXPECT_EQ(vocab.Find(absl::string_view(text.data(), 4)), std::nullopt);
}

TEST(VocabularyTest, EmptyAndAppend) {
  Vocabulary vocab;
  EXPECT_EQ(vocab.size(), 0);
  EXPECT_EQ(vocab.Find("x"), std::nullopt);
  vocab.Append("x");
  vocab.Append("y");
  EXPECT_EQ(vocab.Find("x"), 0);
  EXPECT_EQ(vocab.Find("y"), 1);
}

TEST(VocabularyTest, DuplicatesKeepTheirFirstId) {
  Vocabulary vocab({"a", "b", "a"});
  EXPECT_EQ(vocab.size(), 3);
  EXPECT_EQ(vocab.Find("a"), 0);
  EXPECT_EQ(vocab.Token(2), "a");
}

TEST(VocabularyTest, EmbeddedNulInToken) {
  const std::string token("a\0b", 3);
  Vocabulary vocab({"a", token});
  EXPECT_EQ(vocab.Find(token), 1);
  EXPECT_EQ(vocab.Find("a"), 0);
}

// ---------------------------------------------------------------------------------------------
// FromTextFile

TEST(VocabularyTextFileTest, IdsByLine) {
  const std::string path = WriteTemp("vocab.txt", "<s>\n</s>\n▁the\nword with space\n");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("<s>", "</s>", "▁the", "word with space"));
  ExpectBijection(*vocab);
}

TEST(VocabularyTextFileTest, FinalNewlineDoesNotAddAToken) {
  for (const std::string content : {"a\nb\nc\n", "a\nb\nc"}) {
    const std::string path = WriteTemp("vocab.txt", content);
    absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
    ASSERT_TRUE(vocab.ok()) << vocab.status();
    EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("a", "b", "c")) << content;
  }
}

TEST(VocabularyTextFileTest, EmptyLineKeepsLaterIdsAligned) {
  // An empty line is a token (its line number is its id): the following tokens keep their ids.
  const std::string path = WriteTemp("vocab.txt", "a\n\nb\n");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("a", "", "b"));
  EXPECT_EQ(vocab->Find("b"), 2);
}

TEST(VocabularyTextFileTest, CrLfLineEndings) {
  // A CR right before the LF is part of the line ending; other CRs are kept.
  const std::string path = WriteTemp("vocab.txt", "a\r\nb\r\nc\rd\r\ne");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("a", "b", "c\rd", "e"));
  EXPECT_EQ(vocab->Find("b"), 1);
  EXPECT_EQ(vocab->Find("b\r"), std::nullopt);
}

TEST(VocabularyTextFileTest, CrLfFinalNewlineDoesNotAddAToken) {
  const std::string path = WriteTemp("vocab.txt", "x\r\ny\r\n");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("x", "y"));
}

TEST(VocabularyTextFileTest, EmptyFileIsAnError) {
  const std::string path = WriteTemp("empty.txt", "");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_FALSE(vocab.ok());
  EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
}

TEST(VocabularyTextFileTest, MissingFileNamesThePath) {
  const std::string path = MakeTempDir("missing") + "/no_such_vocab.txt";
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_FALSE(vocab.ok());
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
}

TEST(VocabularyTextFileTest, ManyTokens) {
  std::string content;
  for (int i = 0; i < 5000; ++i) content += "tok" + std::to_string(i) + "\n";
  const std::string path = WriteTemp("big.txt", content);
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromTextFile(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->size(), 5000);
  EXPECT_EQ(vocab->Find("tok4321"), 4321);
  EXPECT_EQ(vocab->Token(4999), "tok4999");
}

// ---------------------------------------------------------------------------------------------
// FromJsonList

TEST(VocabularyJsonListTest, IdsByPosition) {
  const std::string path =
      WriteTemp("vocab.json", R"(["<blank>", "<s>", "</s>", "\u00e9t\u00e9", "a\"b", ""])");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonList(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("<blank>", "<s>", "</s>", "été", "a\"b", ""));
  ExpectBijection(*vocab);
}

TEST(VocabularyJsonListTest, Errors) {
  for (const std::string content : {"", "[", R"({"a": 0})", "[]", R"(["a", 1])", R"(["a", null])",
                                    R"(["a", ["b"]])", "\"a\""}) {
    SCOPED_TRACE(content);
    const std::string path = WriteTemp("bad.json", content);
    absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonList(path);
    ASSERT_FALSE(vocab.ok());
    EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
  }
}

TEST(VocabularyJsonListTest, MissingFileNamesThePath) {
  const std::string path = MakeTempDir("missing") + "/no_such_vocab.json";
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonList(path);
  ASSERT_FALSE(vocab.ok());
  EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------------
// FromJsonMap

TEST(VocabularyJsonMapTest, IdsFromTheMap) {
  const std::string path =
      WriteTemp("vocab.json", R"({"b": 1, "<pad>": 3, "a": 0, "\u0120the": 2, "c": 4})");
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonMap(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(Tokens(*vocab), ::testing::ElementsAre("a", "b", "Ġthe", "<pad>", "c"));
  ExpectBijection(*vocab);
}

// Writes `content` and expects FromJsonMap to fail with a message that names the file and contains
// every one of `parts`.
void ExpectJsonMapError(const std::string& content, const std::vector<std::string>& parts) {
  SCOPED_TRACE(content);
  const std::string path = WriteTemp("bad.json", content);
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonMap(path);
  ASSERT_FALSE(vocab.ok()) << "accepted " << content;
  EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
  for (const std::string& part : parts) EXPECT_THAT(Message(vocab.status()), HasSubstr(part));
}

TEST(VocabularyJsonMapTest, GapsAreErrors) {
  ExpectJsonMapError(R"({"a": 0, "b": 2})", {});
  ExpectJsonMapError(R"({"a": 1, "b": 2})", {});
  ExpectJsonMapError(R"({"a": 0, "b": 1, "c": 7})", {"\"c\""});
}

TEST(VocabularyJsonMapTest, DuplicateIdsAreErrors) {
  ExpectJsonMapError(R"({"a": 0, "b": 0})", {});
  ExpectJsonMapError(R"({"a": 0, "b": 1, "c": 1})", {});
}

TEST(VocabularyJsonMapTest, NonIntegerIdsAreErrors) {
  ExpectJsonMapError(R"({"a": 0, "b": "1"})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": 1.5})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": 1.0})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": null})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": true})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": -1})", {"\"b\""});
  ExpectJsonMapError(R"({"a": 0, "b": 18446744073709551615})", {"\"b\""});
}

TEST(VocabularyJsonMapTest, NotAnObjectOrInvalidJson) {
  ExpectJsonMapError(R"(["a", "b"])", {});
  ExpectJsonMapError("{}", {});
  ExpectJsonMapError(R"({"a": 0,)", {});
  ExpectJsonMapError("", {});
}

TEST(VocabularyJsonMapTest, MissingFileNamesThePath) {
  const std::string path = MakeTempDir("missing") + "/no_such_vocab.json";
  absl::StatusOr<Vocabulary> vocab = Vocabulary::FromJsonMap(path);
  ASSERT_FALSE(vocab.ok());
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(vocab.status()), HasSubstr(path));
}

}  // namespace
}  // namespace rosetta
