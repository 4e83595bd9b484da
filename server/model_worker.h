// The engine worker of one model: a thread that owns the model's running decode batch and serves
// translation and encoding jobs from bounded queues. No gRPC in here; server/ adapts it.
//
// Translation, continuous batching: between decoding steps the worker admits waiting texts,
// oldest first, into the running batch while the batch token budget, the free beams and the free
// cache pages allow; their encoder pass runs together. Every encoder pass stalls the running
// sentences, so while sentences are running, waiting texts join in groups: once the oldest has
// waited admission_wait_steps decoding steps or their tokens reach admission_tokens (into an
// empty batch, at once). Sentences leave the batch the step they finish. Static batching (for
// comparison): texts are admitted only into an empty batch, which is then decoded to the end.
// Encoding: waiting jobs run as one encoder batch of up to encode_token_budget tokens as soon as
// the worker is free (between two decoding steps when translations are running); jobs that
// arrive meanwhile form the next batch. With encode_max_wait > 0 a batch also waits that long
// after its oldest job arrived, unless its tokens fill the budget first.
//
// Every accepted job ends exactly once through its on_done callback: OK, or the error that ended
// it (CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE at shutdown, INTERNAL). Callbacks run on the
// worker thread: they must be quick and must not call the worker except Cancel().
// Thread-safe: every public method may be called from any thread.
#ifndef ROSETTA_SERVER_MODEL_WORKER_H_
#define ROSETTA_SERVER_MODEL_WORKER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engine/decoding.h"
#include "engine/embedding_model.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"
#include "server/compute_gate.h"

namespace rosetta::server {

struct BatchingOptions {
  bool continuous = true;         // false: static batching
  int max_queued_texts = 1024;    // texts waiting in both queues; beyond: RESOURCE_EXHAUSTED
  int batch_token_budget = 4096;  // source tokens admitted in one encoder pass
  // Beams decoded together in one step; 0: AutoRunningSequences(num_threads).
  int max_running_sequences = 0;
  // Continuous batching with sentences running: admit waiting texts once the oldest has waited
  // this many decoding steps, or once they have admission_tokens source tokens (0: every step).
  int admission_wait_steps = 4;
  int admission_tokens = 256;
  int max_decoding_length = 256;       // cap of a request's max_length
  int64_t kv_cache_bytes = 1LL << 30;  // self-attention cache; bounds the running beams too
  int encode_token_budget = 8192;      // tokens of one Encode batch
  absl::Duration encode_max_wait = absl::ZeroDuration();
  int num_threads = 1;  // the engine's threads for this model
};

// The default cap of beams decoded together: max(16, 8 * num_threads). On CPUs a decoding step
// becomes compute-bound at about 8 rows per core (the weights are read once per step, whatever
// the rows): past that, more rows raise throughput little but slow every running sentence's
// every token, so long translations wait longer (docs/BENCHMARKS.md, "Daemon under load").
int AutoRunningSequences(int num_threads);

// The worker's clock: monotonic (it never steps back with the wall clock), as an absl::Time on
// an epoch of its own. Job deadlines and times are on this clock.
absl::Time MonotonicNow();

// When a job arrived, when the engine first worked on it and when it ended (MonotonicNow).
struct JobTimes {
  absl::Time arrival;
  absl::Time started;
  absl::Time finished;
  absl::Duration queued() const;
  absl::Duration inference() const;
};

// What jobs share: cancellation, deadline, times. Fields below "worker" belong to the worker.
struct Job {
  virtual ~Job() = default;
  absl::Time deadline = absl::InfiniteFuture();  // on the MonotonicNow clock
  JobTimes times;
  std::atomic<bool> cancelled{false};
  // worker
  bool done = false;
};

struct TranslationJob : Job {
  std::vector<std::vector<int32_t>> sources;  // token ids, validated for the model
  DecodingOptions options;                    // validated for the model
  bool stream_tokens = false;                 // call on_tokens as tokens are decoded (greedy)
  // Input `index` finished (order of completion, not of input).
  std::function<void(int index, DecodingBatch::Finished& result)> on_result;
  // Input `index` has new tokens: all tokens so far, of which the last `new_count` are new.
  std::function<void(int index, const std::vector<int32_t>& tokens, int new_count)> on_tokens;
  std::function<void(const absl::Status& status, const JobTimes& times)> on_done;
  // worker
  int remaining = 0;
  bool started = false;
};

struct EncodeJob : Job {
  std::vector<std::vector<int32_t>> inputs;  // token ids, validated for the model
  bool normalize = false;
  // On success, `embeddings` holds inputs.size() vectors of the model's dimension, one after the
  // other; on failure it is empty.
  std::function<void(const absl::Status& status, std::vector<float>& embeddings,
                     const JobTimes& times)>
      on_done;
};

// Counters since start, and the current load.
struct WorkerStats {
  int64_t translation_jobs = 0;
  int64_t sentences = 0;
  int64_t decoding_steps = 0;
  int64_t decoded_rows = 0;
  int max_batch_sequences = 0;
  int max_batch_rows = 0;
  int64_t encode_jobs = 0;
  int64_t encode_batches = 0;
  int64_t encoded_texts = 0;
  int max_encode_batch = 0;
  int64_t rejected_queue_full = 0;
  int64_t cancelled = 0;
  int64_t deadline_exceeded = 0;
  int running_sequences = 0;
  int queued_texts = 0;
  int64_t cache_bytes_in_use = 0;
  int64_t cache_bytes_capacity = 0;
  // Time spent waiting for another model of the daemon to finish its unit of work (ComputeGate).
  double compute_wait_seconds = 0;
};

// Receives the worker's per-batch figures (for metrics). Called on the worker thread: must be
// quick and must not call the worker.
class WorkerObserver {
 public:
  virtual ~WorkerObserver() = default;
  // A decoding step ran over `sequences` sentences with `rows` beams in all.
  virtual void OnDecodingStep(int sequences, int rows) = 0;
  // `texts` sentences with `tokens` source tokens joined the running batch in one encoder pass.
  virtual void OnAdmission(int texts, int tokens) = 0;
  // An Encode batch of `texts` texts and `tokens` tokens ran.
  virtual void OnEncodeBatch(int texts, int tokens) = 0;
};

class ModelWorker {
 public:
  // `translation` is the encoder-decoder that Translate jobs use, null for an embedding-only
  // model; `embedder` serves Encode jobs. With a `gate`, the worker computes only while it holds
  // the gate's lease, a unit of work at a time (the models of one daemon take turns on the
  // CPUs). `embedder`, `observer` and `gate` (when not null) must outlive the worker.
  ModelWorker(std::shared_ptr<const TransformerModel> translation, const EmbeddingModel* embedder,
              const BatchingOptions& options, WorkerObserver* observer = nullptr,
              ComputeGate* gate = nullptr);
  ModelWorker(const ModelWorker&) = delete;
  ModelWorker& operator=(const ModelWorker&) = delete;
  // Stops the worker (see Stop).
  ~ModelWorker();

  // Queues a job. Fails at once, without calling on_done, with RESOURCE_EXHAUSTED when the queue
  // cannot take its texts, INVALID_ARGUMENT when its options could never fit in the running
  // batch (see CheckFits) or the model does not translate, or UNAVAILABLE when the worker is
  // stopping. Sets job->times.arrival.
  // REQUIRES: at least one input; options within the worker's limits.
  absl::Status Submit(std::shared_ptr<TranslationJob> job);
  absl::Status Submit(std::shared_ptr<EncodeJob> job);

  // Whether a sentence with these options can ever run here: its beams and its cache pages at
  // most what the whole batch holds.
  absl::Status CheckFits(const DecodingOptions& options) const;

  // Asks the worker to end the job with CANCELLED (removed from the queue or the running batch,
  // its memory freed) unless it ends first.
  void Cancel(Job& job);

  // Ends every job still queued or running with UNAVAILABLE and joins the thread. Idempotent.
  void Stop();

  WorkerStats Stats() const;
  // The options in force (max_running_sequences resolved).
  const BatchingOptions& options() const { return options_; }
  // Beams the cache can hold at the maximum decoding length.
  int max_beams() const { return max_beams_; }

 private:
  struct QueuedText {
    std::shared_ptr<TranslationJob> job;
    int index = 0;
    int64_t queued_at_step = 0;  // stats_.decoding_steps when it was queued
  };
  struct RunningText {
    std::shared_ptr<TranslationJob> job;
    int index = 0;
    size_t streamed = 0;  // tokens already passed to on_tokens
  };

  void Run();
  // UNAVAILABLE when stopping, RESOURCE_EXHAUSTED (counted) when `texts` more do not fit.
  absl::Status RoomLocked(int texts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes what the next iteration works on out of the queues; false when stopping.
  bool NextWork(std::vector<QueuedText>& admit, std::vector<std::shared_ptr<EncodeJob>>& encode,
                std::vector<QueuedText>& expired_texts,
                std::vector<std::shared_ptr<EncodeJob>>& expired_encodes);
  bool EncodeReady(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether waiting texts join the batch now (see the admission rule at the top).
  bool AdmissionDue() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdmitTexts(std::vector<QueuedText>& texts);
  void RunEncodeBatch(std::vector<std::shared_ptr<EncodeJob>>& jobs);
  void StepBatch();
  void SweepRunning(absl::Time now);
  // Running sentences and cache use into stats_.
  void PublishBatchState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends `job` with `status` unless it has ended.
  void EndJob(Job& job, const absl::Status& status);
  void EndTranslation(TranslationJob& job, const absl::Status& status);
  void EndEncode(EncodeJob& job, const absl::Status& status, std::vector<float>& embeddings);
  // Why a job that is still wanted should end now, or OK.
  absl::Status Expired(const Job& job, absl::Time now) const;
  void FailEverything(const absl::Status& status);

  bool BatchEmpty() const { return batch_ == nullptr || batch_->empty(); }

  const std::shared_ptr<const TransformerModel> model_;  // null: embedding only
  const EmbeddingModel* const embedder_;
  const BatchingOptions options_;
  WorkerObserver* const observer_;
  ComputeGate* const gate_;
  int max_beams_ = 0;
  int total_pages_ = 0;

  // Worker thread only.
  std::unique_ptr<DecodingBatch> batch_;  // null: embedding only
  std::unique_ptr<ThreadPool> own_pool_;  // the engine's threads when there is no batch
  Workspace encode_workspace_;
  std::unordered_map<DecodingBatch::SequenceId, RunningText> running_;
  std::vector<float> embeddings_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<QueuedText> translate_queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<EncodeJob>> encode_queue_ ABSL_GUARDED_BY(mu_);
  int queued_texts_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t encode_queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t translate_queued_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  WorkerStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Mutex stop_mu_;
  std::thread thread_;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_MODEL_WORKER_H_
