// Greedy and beam search as a step function over a running batch of sentences.
//
// A DecodingBatch holds the sentences being translated: their cross-attention memory, their beams
// and the beams' self-attention cache. Admit() encodes new sentences together and adds them;
// Step() advances every running sentence by one token and returns the sentences that finished.
// Sentences can therefore join and leave between any two steps (continuous batching), and a
// static batch is simply Admit() once and Step() until empty.
//
// Search semantics (greedy is beam search with beam_size 1):
// - log-probabilities are a log-softmax over the whole vocabulary, after which the model's
//   suppressed tokens are set to -inf, and EOS too while fewer than min_length tokens exist;
// - each step takes the best 2K candidates of a sentence's K beams (ties: lower beam, then lower
//   token first); an EOS among the first K candidates finishes a hypothesis, other candidates
//   become the next beams until K are taken;
// - a sentence ends when it has K finished hypotheses or max_length tokens (EOS counts as a
//   token); at max_length its live beams are finished as they are;
// - score = sum of the token log-probabilities (EOS included) / length^length_penalty; returned
//   tokens exclude EOS.
//
// Not thread-safe: one worker owns a DecodingBatch.
#ifndef ROSETTA_ENGINE_DECODING_H_
#define ROSETTA_ENGINE_DECODING_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/decoder_cache.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "engine/transformer_weights.h"

namespace rosetta {

struct DecodingOptions {
  int beam_size = 2;            // 1 is greedy search
  float length_penalty = 1.0f;  // score = log-prob / length^length_penalty
  int max_length = 256;         // maximum number of generated tokens, EOS included
  int min_length = 0;           // EOS is forbidden before this many tokens
  int num_hypotheses = 1;       // hypotheses returned, best first; at most beam_size
};

// Checks the options against each other and against `max_length_cap`.
absl::Status ValidateDecodingOptions(const DecodingOptions& options, int max_length_cap);

struct Hypothesis {
  std::vector<int32_t> tokens;  // target ids, without the start token and EOS
  float score = 0.0f;
};

struct DecodingBatchOptions {
  int max_beams = 256;        // rows of one decoder step: beams of all running sentences
  int cache_pages = 0;        // capacity of the self-attention cache, in pages
  int cache_page_steps = 16;  // steps per page
  // Threads of the engine's kernels, GEMMs included. With more than one, call SetBlasThreads(1)
  // (engine/blas.h) first: the engine splits OpenBLAS calls across its own threads.
  int num_threads = 1;
};

class DecodingBatch {
 public:
  using SequenceId = int64_t;

  struct Request {
    std::vector<int32_t> source_ids;  // already tokenized, EOS appended when the model wants it
    DecodingOptions options;
  };

  struct Finished {
    SequenceId id = 0;
    std::vector<Hypothesis> hypotheses;
    int steps = 0;  // decoder steps this sentence took
  };

  DecodingBatch(std::shared_ptr<const TransformerModel> model, const DecodingBatchOptions& options);
  DecodingBatch(const DecodingBatch&) = delete;
  DecodingBatch& operator=(const DecodingBatch&) = delete;
  ~DecodingBatch();

  // Cache pages a request with these options reserves while it runs.
  int PagesFor(const DecodingOptions& options) const;
  // Whether a request with these options fits in the batch now (beams and cache).
  bool CanAdmit(const DecodingOptions& options) const;

  // Encodes the requests' sources in one encoder pass and adds them to the running batch.
  // Fails without admitting any when they do not all fit or a source is invalid.
  absl::StatusOr<std::vector<SequenceId>> Admit(std::span<const Request> requests);

  // Advances every running sentence by one token; returns those that finished at this step.
  std::vector<Finished> Step();

  // Drops a running sentence and frees its memory. Returns false if it is not running.
  bool Cancel(SequenceId id);

  // Tokens of the sentence's best live beam so far (for streaming greedy output); null when the
  // sentence is not running. Valid until the next call of a non-const method.
  const std::vector<int32_t>* BestTokens(SequenceId id) const;

  // Beams and cache pages not reserved by running sentences.
  int free_beams() const { return options_.max_beams - reserved_beams_; }
  int free_pages() const { return cache_.free_pages(); }

  // The engine's threads, for other work of the same owner between steps (encoder-only batches).
  ThreadPool* pool() const { return pool_.get(); }

  bool empty() const { return groups_.empty(); }
  int num_sentences() const { return static_cast<int>(groups_.size()); }
  int num_beams() const;  // beams decoded at the next step
  int reserved_beams() const { return reserved_beams_; }
  const DecoderCache& cache() const { return cache_; }
  const TransformerModel& model() const { return *model_; }

 private:
  struct Beam;
  struct Group;

  absl::Status ValidateSource(const std::vector<int32_t>& ids) const;
  void ReleaseGroup(Group& group);
  // Chooses the next beams of `group` from its rows of logits (masked; each beam carries its
  // row's log-normaliser); true when it finished.
  bool AdvanceGroup(Group& group, const float* logits);

  std::shared_ptr<const TransformerModel> model_;
  DecodingBatchOptions options_;
  DecoderCache cache_;
  std::unique_ptr<ThreadPool> pool_;
  Workspace workspace_;
  std::vector<std::unique_ptr<Group>> groups_;
  SequenceId next_id_ = 1;
  int reserved_beams_ = 0;
  std::vector<DecoderRow> rows_;
  AlignedVector<float> encoder_output_;
  // Cross-attention memories of finished sentences, reused by the next ones.
  std::vector<AlignedVector<float>> spare_memories_;
};

// Options of a running batch that holds `sentences` sentences decoded with `options` at once,
// with a cache sized for them.
DecodingBatchOptions StaticBatchOptions(int sentences, const DecodingOptions& options,
                                        int num_threads);

// Translates `sources` as one static batch (admit all, step until done) with a cache sized for it.
absl::StatusOr<std::vector<std::vector<Hypothesis>>> TranslateBatch(
    std::shared_ptr<const TransformerModel> model, const std::vector<std::vector<int32_t>>& sources,
    const DecodingOptions& options, int num_threads = 1);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_DECODING_H_
