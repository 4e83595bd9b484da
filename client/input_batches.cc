#include "client/input_batches.h"

#include <utility>

#include "absl/strings/str_split.h"

namespace rosetta::client {

InputBatches::InputBatches(std::vector<std::string> arguments, std::istream* lines, int batch_size)
    : arguments_(std::move(arguments)),
      lines_(arguments_.empty() ? lines : nullptr),
      batch_size_(batch_size) {}

bool InputBatches::Next(std::vector<std::string>* batch) {
  batch->clear();
  if (lines_ == nullptr) {
    while (next_argument_ < arguments_.size() && static_cast<int>(batch->size()) < batch_size_) {
      batch->push_back(arguments_[next_argument_++]);
    }
  } else {
    std::string line;
    while (static_cast<int>(batch->size()) < batch_size_ && std::getline(*lines_, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      batch->push_back(std::move(line));
    }
  }
  batch_start_ = inputs_read_;
  inputs_read_ += batch->size();
  return !batch->empty();
}

std::vector<std::string> SplitTokens(const std::string& input) {
  return absl::StrSplit(input, ' ', absl::SkipEmpty());
}

}  // namespace rosetta::client
