#include "engine/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace rosetta {

namespace {

using CodePoints = std::u32string;

bool IsCategory(char32_t c, std::initializer_list<utf8proc_category_t> categories) {
  const utf8proc_category_t category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  for (utf8proc_category_t candidate : categories) {
    if (category == candidate) return true;
  }
  return false;
}

// BERT's _is_control: every "C*" category except the three whitespace controls.
bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return IsCategory(c, {UTF8PROC_CATEGORY_CC, UTF8PROC_CATEGORY_CF, UTF8PROC_CATEGORY_CO,
                        UTF8PROC_CATEGORY_CS, UTF8PROC_CATEGORY_CN});
}

// BERT's _is_whitespace.
bool IsWhitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || IsCategory(c, {UTF8PROC_CATEGORY_ZS});
}

// What Python's str.split() splits on once the text is cleaned (controls are gone and other
// whitespace became spaces): spaces and the line and paragraph separators.
bool IsSplitSpace(char32_t c) {
  return c == ' ' || IsCategory(c, {UTF8PROC_CATEGORY_ZL, UTF8PROC_CATEGORY_ZP});
}

// BERT's _is_punctuation: ASCII's non-alphanumeric printable characters count even where
// Unicode calls them symbols ($, +, <, ^, `, |, ~).
bool IsPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126)) {
    return true;
  }
  return IsCategory(
      c, {UTF8PROC_CATEGORY_PC, UTF8PROC_CATEGORY_PD, UTF8PROC_CATEGORY_PS, UTF8PROC_CATEGORY_PE,
          UTF8PROC_CATEGORY_PI, UTF8PROC_CATEGORY_PF, UTF8PROC_CATEGORY_PO});
}

// The CJK Unified Ideographs blocks BERT treats as words of their own (not Hangul, Hiragana or
// Katakana, which are written with spaces between words).
bool IsChineseCharacter(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsCased(char32_t c) {
  return IsCategory(c, {UTF8PROC_CATEGORY_LU, UTF8PROC_CATEGORY_LL, UTF8PROC_CATEGORY_LT});
}

// Unicode's Case_Ignorable: these categories plus the Word_Break MidLetter, MidNumLet and
// Single_Quote characters (listed here: utf8proc has no Word_Break property).
bool IsCaseIgnorable(char32_t c) {
  switch (c) {
    case '\'':
    case '.':
    case ':':
    case 0x00B7:
    case 0x0387:
    case 0x055F:
    case 0x05F4:
    case 0x2018:
    case 0x2019:
    case 0x2024:
    case 0x2027:
    case 0xFE13:
    case 0xFE52:
    case 0xFE55:
    case 0xFF07:
    case 0xFF0E:
    case 0xFF1A:
      return true;
    default:
      return IsCategory(c, {UTF8PROC_CATEGORY_MN, UTF8PROC_CATEGORY_ME, UTF8PROC_CATEGORY_CF,
                            UTF8PROC_CATEGORY_LM, UTF8PROC_CATEGORY_SK});
  }
}

absl::StatusOr<CodePoints> DecodeUtf8(absl::string_view text) {
  CodePoints out;
  out.reserve(text.size());
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t pos = 0;
  const auto size = static_cast<utf8proc_ssize_t>(text.size());
  while (pos < size) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + pos, size - pos, &c);
    if (n <= 0 || c < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("text is not valid UTF-8 (at byte ", pos, ")"));
    }
    out.push_back(static_cast<char32_t>(c));
    pos += n;
  }
  return out;
}

void AppendUtf8(char32_t c, std::string& out) {
  utf8proc_uint8_t buffer[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buffer);
  out.append(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

std::string EncodeUtf8(const CodePoints& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendUtf8(c, out);
  return out;
}

// NFC (compose) or NFD (decompose) of valid code points.
CodePoints Normalize(const CodePoints& text, bool compose) {
  bool ascii = true;
  for (char32_t c : text) ascii = ascii && c < 0x80;
  if (ascii) return text;  // already in every normal form
  const std::string utf8 = EncodeUtf8(text);
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                   static_cast<utf8proc_ssize_t>(utf8.size()), &mapped,
                   static_cast<utf8proc_option_t>(
                       UTF8PROC_STABLE | (compose ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE)));
  if (n < 0) return text;  // only on allocation failure: the input is valid
  absl::StatusOr<CodePoints> result =
      DecodeUtf8(absl::string_view(reinterpret_cast<const char*>(mapped), n));
  std::free(mapped);
  return result.ok() ? *std::move(result) : text;
}

// Python's str.lower(): utf8proc's simple mappings plus the two differences of the full ones,
// U+0130 (to "i" and a combining dot) and Greek capital sigma at the end of a word.
CodePoints Lower(const CodePoints& word) {
  CodePoints out;
  out.reserve(word.size());
  const int n = static_cast<int>(word.size());
  for (int i = 0; i < n; ++i) {
    const char32_t c = word[i];
    if (c == 0x0130) {
      out.push_back('i');
      out.push_back(0x0307);
    } else if (c == 0x03A3) {
      // Final_Sigma: a cased letter before (case-ignorables skipped), none after.
      int j = i - 1;
      while (j >= 0 && IsCaseIgnorable(word[j])) --j;
      bool final_sigma = j >= 0 && IsCased(word[j]);
      if (final_sigma) {
        int k = i + 1;
        while (k < n && IsCaseIgnorable(word[k])) ++k;
        final_sigma = k == n || !IsCased(word[k]);
      }
      out.push_back(final_sigma ? 0x03C2 : 0x03C3);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

CodePoints StripAccents(const CodePoints& word) {
  CodePoints out;
  for (char32_t c : Normalize(word, /*compose=*/false)) {
    if (!IsCategory(c, {UTF8PROC_CATEGORY_MN})) out.push_back(c);
  }
  return out;
}

}  // namespace

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::Create(Vocabulary vocabulary,
                                                              const WordPieceOptions& options,
                                                              const std::string& vocabulary_path) {
  WordPieceTokenizer tokenizer(std::move(vocabulary), options);
  auto require = [&](const std::string& token, int* id) -> absl::Status {
    std::optional<int> found = tokenizer.vocabulary_.Find(token);
    if (!found.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(vocabulary_path, ": the special token ", token, " is missing"));
    }
    *id = *found;
    return absl::OkStatus();
  };
  for (auto [token, id] : {std::pair{&options.unk_token, &tokenizer.unk_id_},
                           std::pair{&options.cls_token, &tokenizer.cls_id_},
                           std::pair{&options.sep_token, &tokenizer.sep_id_}}) {
    if (absl::Status status = require(*token, id); !status.ok()) return status;
  }
  if (std::optional<int> pad = tokenizer.vocabulary_.Find(options.pad_token)) {
    tokenizer.pad_id_ = *pad;
  }
  if (options.max_input_chars_per_word < 1) {
    return absl::InvalidArgumentError("max_input_chars_per_word must be positive");
  }
  return tokenizer;
}

void WordPieceTokenizer::AppendPieces(const CodePoints& word,
                                      std::vector<std::string>& pieces) const {
  if (static_cast<int>(word.size()) > options_.max_input_chars_per_word) {
    pieces.push_back(options_.unk_token);
    return;
  }
  // Byte offset of every code point boundary, so candidates are substrings of one UTF-8 string.
  const std::string utf8 = EncodeUtf8(word);
  std::vector<size_t> boundary;
  boundary.reserve(word.size() + 1);
  size_t offset = 0;
  for (char32_t c : word) {
    boundary.push_back(offset);
    offset += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  boundary.push_back(offset);

  const size_t first_new = pieces.size();
  const int n = static_cast<int>(word.size());
  std::string candidate;
  for (int start = 0; start < n;) {
    int end = n;
    for (; end > start; --end) {
      candidate.assign(start > 0 ? "##" : "");
      candidate.append(utf8, boundary[start], boundary[end] - boundary[start]);
      if (vocabulary_.Find(candidate).has_value()) break;
    }
    if (end == start) {  // no piece matches: the whole word is unknown
      pieces.resize(first_new);
      pieces.push_back(options_.unk_token);
      return;
    }
    pieces.push_back(candidate);
    start = end;
  }
}

absl::StatusOr<std::vector<std::string>> WordPieceTokenizer::Tokenize(
    absl::string_view text) const {
  absl::StatusOr<CodePoints> decoded = DecodeUtf8(text);
  if (!decoded.ok()) return decoded.status();

  CodePoints cleaned;
  cleaned.reserve(decoded->size());
  for (char32_t c : *decoded) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      cleaned.push_back(' ');
    } else if (options_.tokenize_chinese_chars && IsChineseCharacter(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  const CodePoints normalized = Normalize(cleaned, /*compose=*/true);
  const bool strip = options_.strip_accents.value_or(options_.lower_case);

  std::vector<std::string> pieces;
  CodePoints word;
  auto flush_word = [&]() {
    if (word.empty()) return;
    CodePoints w = options_.lower_case ? Lower(word) : word;
    if (strip) w = StripAccents(w);
    // Punctuation splits the word; each punctuation character is a word of its own.
    CodePoints part;
    for (char32_t c : w) {
      if (IsPunctuation(c)) {
        if (!part.empty()) AppendPieces(part, pieces);
        part.clear();
        AppendPieces(CodePoints(1, c), pieces);
      } else if (IsSplitSpace(c)) {  // lower-casing and NFD never make spaces; kept for safety
        if (!part.empty()) AppendPieces(part, pieces);
        part.clear();
      } else {
        part.push_back(c);
      }
    }
    if (!part.empty()) AppendPieces(part, pieces);
    word.clear();
  };
  for (char32_t c : normalized) {
    if (IsSplitSpace(c)) {
      flush_word();
    } else {
      word.push_back(c);
    }
  }
  flush_word();
  return pieces;
}

absl::StatusOr<std::vector<int32_t>> WordPieceTokenizer::Encode(absl::string_view text) const {
  absl::StatusOr<std::vector<std::string>> pieces = Tokenize(text);
  if (!pieces.ok()) return pieces.status();
  std::vector<int32_t> ids;
  ids.reserve(pieces->size());
  for (const std::string& piece : *pieces) {
    ids.push_back(vocabulary_.Find(piece).value_or(unk_id_));
  }
  return ids;
}

}  // namespace rosetta
