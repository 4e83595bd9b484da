// How `rosetta` prints results: one line per input, as plain text or as JSON (JSON Lines).
//
// Plain translations match the engine's tool, rosetta-translate: the hypotheses of an input
// tab-separated, best first, each "SCORE ||| TEXT" (score with 6 decimals) when scores are asked.
#ifndef ROSETTA_CLIENT_OUTPUT_FORMAT_H_
#define ROSETTA_CLIENT_OUTPUT_FORMAT_H_

#include <string>

#include "rosetta/v1/rosetta.pb.h"

namespace rosetta::client {

struct TranslationFormat {
  bool scores = false;  // plain text: "SCORE ||| " before each hypothesis
  bool json = false;    // a JSON object: hypotheses (text, tokens, score), input/output tokens
};

// One line, without its newline.
std::string FormatTranslation(const rosetta::v1::Translation& translation,
                              const TranslationFormat& format);

// One line, without its newline: the values space-separated ("%.6g"), or with `json` an object
// with values, tokens and truncated.
std::string FormatEmbedding(const rosetta::v1::Embedding& embedding, bool json);

// "translation", "embedding" or "unspecified".
std::string ModelKindName(rosetta::v1::ModelKind kind);

// A table with a header line: name, kind, architecture, quantization, compute type and a "*" for
// the default model, in aligned columns; each line ends with a newline.
std::string FormatModelTable(const rosetta::v1::ListModelsResponse& models);

}  // namespace rosetta::client

#endif  // ROSETTA_CLIENT_OUTPUT_FORMAT_H_
