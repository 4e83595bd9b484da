// The inputs of a `rosetta` command, in batches: the command's arguments if it has any, else the
// lines of an input stream (stdin), read one batch at a time so that output follows input.
#ifndef ROSETTA_CLIENT_INPUT_BATCHES_H_
#define ROSETTA_CLIENT_INPUT_BATCHES_H_

#include <istream>
#include <string>
#include <vector>

namespace rosetta::client {

class InputBatches {
 public:
  // Batches of `arguments`, or, when `arguments` is empty, of the lines of `lines` (a trailing
  // "\r" is dropped). REQUIRES: batch_size >= 1. `lines` must outlive this object.
  InputBatches(std::vector<std::string> arguments, std::istream* lines, int batch_size);

  InputBatches(const InputBatches&) = delete;
  InputBatches& operator=(const InputBatches&) = delete;

  // Replaces `batch` with the next (at most batch_size) inputs. Returns false, with `batch`
  // empty, when no inputs are left.
  bool Next(std::vector<std::string>* batch);

  // The position of the first input of the last batch among all inputs, from 0.
  size_t batch_start() const { return batch_start_; }

 private:
  std::vector<std::string> arguments_;
  size_t next_argument_ = 0;
  std::istream* lines_;  // nullptr when reading arguments
  int batch_size_;
  size_t batch_start_ = 0;
  size_t inputs_read_ = 0;  // inputs returned in batches so far
};

// Splits a pre-tokenized input on spaces, dropping empty tokens.
std::vector<std::string> SplitTokens(const std::string& input);

}  // namespace rosetta::client

#endif  // ROSETTA_CLIENT_INPUT_BATCHES_H_
