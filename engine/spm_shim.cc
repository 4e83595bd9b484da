// librosetta_spm_shim.so: SentencePiece behind the C interface of spm_shim_api.h.
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/spm_shim_api.h"

namespace {

void SetError(const std::string& message, char* error, size_t error_size) {
  if (error_size == 0) return;
  const size_t n = std::min(message.size(), error_size - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

long CopyOut(const std::string& bytes, char* out, size_t capacity) {
  if (bytes.size() <= capacity) std::memcpy(out, bytes.data(), bytes.size());
  return static_cast<long>(bytes.size());
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* rosetta_spm_load(const char* path, char* error,
                                                              size_t error_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->Load(path);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_size);
    delete processor;
    return nullptr;
  }
  return processor;
}

__attribute__((visibility("default"))) void rosetta_spm_free(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

__attribute__((visibility("default"))) long rosetta_spm_encode(void* processor, const char* text,
                                                               size_t size, char* out,
                                                               size_t capacity, char* error,
                                                               size_t error_size) {
  std::vector<std::string> pieces;
  const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Encode(
      std::string(text, size), &pieces);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_size);
    return -1;
  }
  std::string joined;
  for (const std::string& piece : pieces) {
    joined += piece;
    joined.push_back('\0');
  }
  return CopyOut(joined, out, capacity);
}

__attribute__((visibility("default"))) long rosetta_spm_decode(void* processor, const char* pieces,
                                                               size_t size, char* out,
                                                               size_t capacity, char* error,
                                                               size_t error_size) {
  std::vector<std::string> list;
  size_t start = 0;
  for (size_t i = 0; i < size; ++i) {
    if (pieces[i] == '\0') {
      list.emplace_back(pieces + start, i - start);
      start = i + 1;
    }
  }
  std::string text;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(processor)->Decode(list, &text);
  if (!status.ok()) {
    SetError(status.ToString(), error, error_size);
    return -1;
  }
  return CopyOut(text, out, capacity);
}

}  // extern "C"
