#!/usr/bin/python3
"""Reference BERT WordPiece tokenizer (Hugging Face's BertTokenizer rules), in plain Python.

Written from the published algorithm of Hugging Face's `tokenization_bert.py` (BasicTokenizer +
WordpieceTokenizer, itself Google BERT's `tokenization.py`); it does not need `transformers`.
Character classes come from Python's `unicodedata`. Special-token strings in the text are
ordinary text (Hugging Face's `split_special_tokens=True`), as in engine/wordpiece_tokenizer.h.

Commands
--------
selftest
    Checks this implementation against the expectations of Hugging Face's own tokenizer tests
    (tests/models/bert/test_tokenization_bert.py); exits non-zero on any mismatch.
expect --vocab FILE --texts FILE.json --out-json FILE
    For every text of the JSON list and two configurations (uncased: lower-case + strip accents;
    cased: neither), writes {"vocab": path, "cases": [{"text", "lower_case", "pieces", "ids"}]},
    ids with [CLS] and [SEP] around them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata


def is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def is_chinese_char(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class BasicTokenizer:
    def __init__(self, lower_case=True, strip_accents=None, tokenize_chinese_chars=True,
                 never_split=()):
        self.lower_case = lower_case
        self.strip_accents = strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.never_split = set(never_split)

    def tokenize(self, text: str) -> list[str]:
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or is_control(ch):
                continue
            if is_whitespace(ch):
                cleaned.append(" ")
            elif self.tokenize_chinese_chars and is_chinese_char(cp):
                cleaned.extend((" ", ch, " "))
            else:
                cleaned.append(ch)
        text = unicodedata.normalize("NFC", "".join(cleaned))
        words = []
        for word in text.split():
            if word in self.never_split:
                words.append(word)
                continue
            if self.lower_case:
                word = word.lower()
            strip = self.strip_accents if self.strip_accents is not None else self.lower_case
            if strip:
                word = "".join(c for c in unicodedata.normalize("NFD", word)
                               if unicodedata.category(c) != "Mn")
            words.extend(self.split_on_punctuation(word))
        return " ".join(words).split()

    @staticmethod
    def split_on_punctuation(word: str) -> list[str]:
        out: list[list[str]] = []
        start_new = True
        for ch in word:
            if is_punctuation(ch):
                out.append([ch])
                start_new = True
            else:
                if start_new:
                    out.append([])
                start_new = False
                out[-1].append(ch)
        return ["".join(x) for x in out]


class WordpieceTokenizer:
    def __init__(self, vocab: dict[str, int], unk="[UNK]", max_chars=100):
        self.vocab, self.unk, self.max_chars = vocab, unk, max_chars

    def tokenize(self, text: str) -> list[str]:
        out = []
        for word in text.split():
            if len(word) > self.max_chars:
                out.append(self.unk)
                continue
            pieces, start = [], 0
            while start < len(word):
                end, found = len(word), None
                while start < end:
                    piece = ("##" if start > 0 else "") + word[start:end]
                    if piece in self.vocab:
                        found = piece
                        break
                    end -= 1
                if found is None:
                    pieces = [self.unk]
                    break
                pieces.append(found)
                start = end
            out.extend(pieces)
        return out


class BertTokenizer:
    def __init__(self, vocab: list[str], lower_case=True, strip_accents=None,
                 tokenize_chinese_chars=True):
        self.vocab = {}
        for i, token in enumerate(vocab):
            self.vocab.setdefault(token, i)
        self.basic = BasicTokenizer(lower_case, strip_accents, tokenize_chinese_chars)
        self.wordpiece = WordpieceTokenizer(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return [p for word in self.basic.tokenize(text) for p in self.wordpiece.tokenize(word)]

    def encode(self, text: str) -> list[int]:
        unk = self.vocab["[UNK]"]
        ids = [self.vocab.get(p, unk) for p in self.tokenize(text)]
        return [self.vocab["[CLS]"]] + ids + [self.vocab["[SEP]"]]


def read_vocab(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").rstrip("\r") for line in f]


# ------------------------------------------------------------------ Hugging Face's expectations

def selftest() -> int:
    failures = []

    def check(name, got, want):
        if got != want:
            failures.append(f"{name}: got {got!r}, want {want!r}")

    text = " \tHeLLo!how  \n Are yoU?  "
    accented = " \tHäLLo!how  \n Are yoU?  "
    check("chinese", BasicTokenizer().tokenize("ah\u535A\u63A8zz"), ["ah", "\u535A", "\u63A8", "zz"])
    check("lower", BasicTokenizer(True).tokenize(text), ["hello", "!", "how", "are", "you", "?"])
    check("lower accent", BasicTokenizer(True).tokenize("H\u00E9llo"), ["hello"])
    check("lower strip false", BasicTokenizer(True, False).tokenize(accented),
          ["hällo", "!", "how", "are", "you", "?"])
    check("lower strip false 2", BasicTokenizer(True, False).tokenize("H\u00E9llo"), ["h\u00E9llo"])
    check("lower strip true", BasicTokenizer(True, True).tokenize(accented),
          ["hallo", "!", "how", "are", "you", "?"])
    check("lower strip default", BasicTokenizer(True).tokenize(accented),
          ["hallo", "!", "how", "are", "you", "?"])
    check("no lower", BasicTokenizer(False).tokenize(text), ["HeLLo", "!", "how", "Are", "yoU", "?"])
    check("no lower strip false", BasicTokenizer(False, False).tokenize(accented),
          ["HäLLo", "!", "how", "Are", "yoU", "?"])
    check("no lower strip true", BasicTokenizer(False, True).tokenize(accented),
          ["HaLLo", "!", "how", "Are", "yoU", "?"])
    check("never split", BasicTokenizer(False, never_split=["[UNK]"]).tokenize(text + "[UNK]"),
          ["HeLLo", "!", "how", "Are", "yoU", "?", "[UNK]"])
    check("punctuation", BasicTokenizer().tokenize("a\n'll !!to?'d of, can't."),
          ["a", "'", "ll", "!", "!", "to", "?", "'", "d", "of", ",", "can", "'", "t", "."])
    check("remove control chars", BasicTokenizer().tokenize("\u200E\u200F"), [])
    wp_vocab = ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing"]
    wordpiece = WordpieceTokenizer({t: i for i, t in enumerate(wp_vocab)})
    check("wordpiece empty", wordpiece.tokenize(""), [])
    check("wordpiece", wordpiece.tokenize("unwanted running"), ["un", "##want", "##ed", "runn", "##ing"])
    check("wordpiece unk", wordpiece.tokenize("unwantedX running"), ["[UNK]", "runn", "##ing"])
    for ch in [" ", "\t", "\r", "\n", "\u00A0"]:
        check(f"is_whitespace {ch!r}", is_whitespace(ch), True)
    for ch in ["A", "-"]:
        check(f"is_whitespace {ch!r}", is_whitespace(ch), False)
    check("is_control \\u0005", is_control("\u0005"), True)
    for ch in ["A", " ", "\t", "\r"]:
        check(f"is_control {ch!r}", is_control(ch), False)
    for ch in ["-", "$", "`", "."]:
        check(f"is_punctuation {ch!r}", is_punctuation(ch), True)
    for ch in ["A", " "]:
        check(f"is_punctuation {ch!r}", is_punctuation(ch), False)
    full_vocab = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "want", "##want", "##ed", "wa",
                  "un", "runn", "##ing", ",", "low", "lowest"]
    full = BertTokenizer(full_vocab)
    check("full tokenizer", full.tokenize("UNwant\u00E9d,running"),
          ["un", "##want", "##ed", ",", "runn", "##ing"])
    check("full tokenizer ids", full.encode("UNwant\u00E9d,running")[1:-1], [9, 6, 7, 12, 10, 11])
    check("clean text", [full.tokenize(t) for t in ["Test", "\xad", "test"]],
          [["[UNK]"], [], ["[UNK]"]])
    chinese = BertTokenizer(["[UNK]", "[CLS]", "[SEP]", "的", "人", "有", "##人", "##有"])
    check("tokenize_chinese_chars", chinese.tokenize("的人有"), ["的", "人", "有"])
    no_chinese = BertTokenizer(["[UNK]", "[CLS]", "[SEP]", "的", "人", "有", "##人", "##有"],
                               tokenize_chinese_chars=False)
    check("no tokenize_chinese_chars", no_chinese.tokenize("的人有"), ["的", "##人", "##有"])
    naive = BertTokenizer(["[UNK]", "[CLS]", "[SEP]", "a", ",", "naive", "allen", "##nl", "##p",
                           "sentence", "."])
    check("offsets example (lower case)", naive.tokenize("A, naïve AllenNLP sentence."),
          ["a", ",", "naive", "allen", "##nl", "##p", "sentence", "."])
    for failure in failures:
        print("FAIL", failure)
    print(f"selftest: {len(failures)} failures")
    return 1 if failures else 0


def expect(args) -> int:
    vocab = read_vocab(args.vocab)
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    cases = []
    for lower_case in (True, False):
        tokenizer = BertTokenizer(vocab, lower_case=lower_case)
        for text in texts:
            cases.append({"text": text, "lower_case": lower_case,
                          "pieces": tokenizer.tokenize(text), "ids": tokenizer.encode(text)})
    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    with open(args.out_json, "w", encoding="utf-8") as f:
        json.dump({"vocab": args.vocab, "cases": cases}, f, ensure_ascii=True, indent=1)
    print(f"{len(cases)} cases written to {args.out_json}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selftest")
    e = sub.add_parser("expect")
    e.add_argument("--vocab", required=True)
    e.add_argument("--texts", required=True)
    e.add_argument("--out-json", required=True)
    args = parser.parse_args()
    if args.command == "selftest":
        return selftest()
    return expect(args)


if __name__ == "__main__":
    sys.exit(main())
