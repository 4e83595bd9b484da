#include "engine/spm_processor.h"

#include <sentencepiece_processor.h>

namespace rosetta {

struct SpmProcessor::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SpmProcessor::SpmProcessor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmProcessor::~SpmProcessor() = default;

std::unique_ptr<SpmProcessor> SpmProcessor::Load(const std::string& path, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const auto status = impl->processor.Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SpmProcessor>(new SpmProcessor(std::move(impl)));
}

bool SpmProcessor::Encode(const std::string& text, std::vector<std::string>* pieces,
                          std::string* error) const {
  const auto status = impl_->processor.Encode(text, pieces);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

bool SpmProcessor::Decode(const std::vector<std::string>& pieces, std::string* text,
                          std::string* error) const {
  const auto status = impl_->processor.Decode(pieces, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

}  // namespace rosetta
