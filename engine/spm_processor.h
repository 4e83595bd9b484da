// SpmProcessor: a narrow wrapper over sentencepiece::SentencePieceProcessor.
//
// SentencePiece's public header declares its own `absl::string_view`, which clashes with Abseil's,
// so it is included in spm_processor.cc only; this header uses nothing but the standard library.
#ifndef ROSETTA_ENGINE_SPM_PROCESSOR_H_
#define ROSETTA_ENGINE_SPM_PROCESSOR_H_

#include <memory>
#include <string>
#include <vector>

namespace rosetta {

class SpmProcessor {
 public:
  // Loads a model file; on failure returns null and sets `error`.
  static std::unique_ptr<SpmProcessor> Load(const std::string& path, std::string* error);
  ~SpmProcessor();

  // Text -> pieces. Returns false and sets `error` on failure.
  bool Encode(const std::string& text, std::vector<std::string>* pieces, std::string* error) const;
  // Pieces -> text. Returns false and sets `error` on failure.
  bool Decode(const std::vector<std::string>& pieces, std::string* text, std::string* error) const;

 private:
  struct Impl;
  explicit SpmProcessor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_SPM_PROCESSOR_H_
