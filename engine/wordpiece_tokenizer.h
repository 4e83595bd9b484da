// WordPieceTokenizer: BERT's tokenizer, text -> vocabulary ids, following the rules of Hugging
// Face's BertTokenizer (the Python "slow" one, itself Google BERT's tokenization.py):
//
//  1. Clean: drop U+0000, U+FFFD and every character of a "C*" category (controls, format
//     characters such as zero-width spaces and joiners, private use, unassigned) except \t \n \r;
//     every whitespace character (\t \n \r and category Zs) becomes a space.
//  2. Put spaces around CJK ideographs (the code point ranges BERT lists), so each is a word.
//  3. Unicode NFC, then split on whitespace (spaces and the line/paragraph separators U+2028,
//     U+2029, which Python's str.split() also splits on).
//  4. Per word: lower-case (Python's str.lower(): full mappings, with Greek final sigma) when
//     `lower_case`; strip accents (NFD, drop nonspacing marks Mn) when `strip_accents` (by default
//     when lower-casing); split off every punctuation character (category P*, and all of ASCII's
//     non-alphanumeric printable characters such as $ + < = > ^ ` | ~).
//  5. WordPiece: greedy longest-match-first over each word's code points, continuation pieces
//     prefixed with "##"; a word longer than `max_input_chars_per_word` code points, or one with
//     any remainder no piece matches, becomes [UNK] as a whole.
//
// Special-token strings in the text ("[CLS]", "[MASK]") are tokenized as ordinary text, as
// Hugging Face does with split_special_tokens=True: a caller's text can never inject them.
// Character properties and normalisation come from utf8proc; the only hand-written table is the
// handful of Word_Break MidLetter/MidNumLet/Single_Quote characters that count as case-ignorable
// for the final sigma rule, which utf8proc does not expose.
//
// Immutable after loading; thread-safe.
#ifndef ROSETTA_ENGINE_WORDPIECE_TOKENIZER_H_
#define ROSETTA_ENGINE_WORDPIECE_TOKENIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/vocabulary.h"

namespace rosetta {

struct WordPieceOptions {
  // Lower-case every word (uncased models; tokenizer_config.json "do_lower_case").
  bool lower_case = true;
  // Strip accents; unset: the same as lower_case (tokenizer_config.json "strip_accents").
  std::optional<bool> strip_accents;
  // Make every CJK ideograph a word of its own ("tokenize_chinese_chars").
  bool tokenize_chinese_chars = true;
  // Longer words become [UNK].
  int max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]";
  std::string cls_token = "[CLS]";
  std::string sep_token = "[SEP]";
  std::string pad_token = "[PAD]";
};

class WordPieceTokenizer {
 public:
  // Takes a vocabulary (vocab.txt, one piece per line). The unknown, CLS and SEP tokens must be in
  // it; the error names `vocabulary_path` and the missing token.
  static absl::StatusOr<WordPieceTokenizer> Create(Vocabulary vocabulary,
                                                   const WordPieceOptions& options,
                                                   const std::string& vocabulary_path);

  // The pieces of `text`, without [CLS]/[SEP]. Error: `text` is not valid UTF-8.
  absl::StatusOr<std::vector<std::string>> Tokenize(absl::string_view text) const;
  // The ids of those pieces (pieces not in the vocabulary are [UNK] already).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;

  const Vocabulary& vocabulary() const { return vocabulary_; }
  const WordPieceOptions& options() const { return options_; }
  int unk_id() const { return unk_id_; }
  int cls_id() const { return cls_id_; }
  int sep_id() const { return sep_id_; }
  int pad_id() const { return pad_id_; }  // -1 when the vocabulary has no padding token

 private:
  WordPieceTokenizer(Vocabulary vocabulary, const WordPieceOptions& options)
      : vocabulary_(std::move(vocabulary)), options_(options) {}

  // Appends the WordPiece pieces of one basic-tokenized word.
  void AppendPieces(const std::u32string& word, std::vector<std::string>& pieces) const;

  Vocabulary vocabulary_;
  WordPieceOptions options_;
  int unk_id_ = 0;
  int cls_id_ = 0;
  int sep_id_ = 0;
  int pad_id_ = -1;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_WORDPIECE_TOKENIZER_H_
