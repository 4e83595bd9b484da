#include "server/model_worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace rosetta::server {

namespace {

constexpr int kCachePageSteps = 16;

int64_t CachePageBytes(const TransformerModel& model) {
  return static_cast<int64_t>(model.decoder_layers.size()) * 2 * model.config.d_model *
         kCachePageSteps * static_cast<int64_t>(sizeof(float));
}

int PagesPerBeam(int max_length) { return (max_length + kCachePageSteps - 1) / kCachePageSteps; }

BatchingOptions Resolve(BatchingOptions options) {
  if (options.max_running_sequences <= 0) {
    options.max_running_sequences = AutoRunningSequences(options.num_threads);
  }
  return options;
}

DecodingBatchOptions MakeBatchOptions(const TransformerModel& model,
                                      const BatchingOptions& options) {
  DecodingBatchOptions batch;
  batch.max_beams = std::max(1, options.max_running_sequences);
  batch.cache_page_steps = kCachePageSteps;
  const int64_t by_bytes = options.kv_cache_bytes / CachePageBytes(model);
  const int64_t worst_case =
      static_cast<int64_t>(batch.max_beams) * PagesPerBeam(options.max_decoding_length);
  batch.cache_pages = static_cast<int>(std::min(by_bytes, worst_case));
  batch.num_threads = std::max(1, options.num_threads);
  return batch;
}

}  // namespace

int AutoRunningSequences(int num_threads) { return std::max(16, 8 * num_threads); }

absl::Time MonotonicNow() {
  return absl::UnixEpoch() + absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

absl::Duration JobTimes::queued() const {
  return started == absl::Time() ? finished - arrival : started - arrival;
}

absl::Duration JobTimes::inference() const {
  return started == absl::Time() ? absl::ZeroDuration() : finished - started;
}

ModelWorker::ModelWorker(std::shared_ptr<const TransformerModel> translation,
                         const EmbeddingModel* embedder, const BatchingOptions& options,
                         WorkerObserver* observer, ComputeGate* gate)
    : model_(std::move(translation)),
      embedder_(embedder),
      options_(Resolve(options)),
      observer_(observer),
      gate_(gate) {
  if (model_ != nullptr) {
    const DecodingBatchOptions batch_options = MakeBatchOptions(*model_, options_);
    batch_ = std::make_unique<DecodingBatch>(model_, batch_options);
    max_beams_ = std::min(batch_options.max_beams,
                          batch_options.cache_pages / PagesPerBeam(options_.max_decoding_length));
    total_pages_ = batch_options.cache_pages;
    encode_workspace_.set_pool(batch_->pool());
    stats_.cache_bytes_capacity = batch_options.cache_pages * CachePageBytes(*model_);
  } else {
    own_pool_ = std::make_unique<ThreadPool>(std::max(1, options.num_threads));
    encode_workspace_.set_pool(own_pool_.get());
  }
  thread_ = std::thread([this] { Run(); });
}

ModelWorker::~ModelWorker() { Stop(); }

absl::Status ModelWorker::RoomLocked(int texts) {
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (queued_texts_ + texts > options_.max_queued_texts) {
    ++stats_.rejected_queue_full;
    return absl::ResourceExhaustedError(absl::StrCat("the model's queue is full (", queued_texts_,
                                                     " texts waiting, limit ",
                                                     options_.max_queued_texts, "): retry later"));
  }
  return absl::OkStatus();
}

absl::Status ModelWorker::CheckFits(const DecodingOptions& options) const {
  if (batch_ == nullptr) {
    return absl::InvalidArgumentError("this model does not translate (it is an embedding model)");
  }
  const int pages = batch_->PagesFor(options);
  if (options.beam_size > options_.max_running_sequences || pages > total_pages_) {
    return absl::InvalidArgumentError(
        absl::StrCat("options: beam_size ", options.beam_size, " with max_length ",
                     options.max_length, " needs ", options.beam_size, " beams and ", pages,
                     " cache pages; this model runs at most ", options_.max_running_sequences,
                     " beams and ", total_pages_, " pages (max_running_sequences, kv_cache_mb)"));
  }
  return absl::OkStatus();
}

absl::Status ModelWorker::Submit(std::shared_ptr<TranslationJob> job) {
  const int texts = static_cast<int>(job->sources.size());
  // A job that could never be admitted would wait forever.
  if (absl::Status s = CheckFits(job->options); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  if (absl::Status room = RoomLocked(texts); !room.ok()) return room;
  job->times.arrival = MonotonicNow();
  job->remaining = texts;
  for (int i = 0; i < texts; ++i) {
    translate_queue_.push_back(QueuedText{job, i, stats_.decoding_steps});
    translate_queued_tokens_ += static_cast<int64_t>(job->sources[i].size());
  }
  queued_texts_ += texts;
  ++stats_.translation_jobs;
  wake_.Signal();
  return absl::OkStatus();
}

absl::Status ModelWorker::Submit(std::shared_ptr<EncodeJob> job) {
  if (embedder_ == nullptr) return absl::InvalidArgumentError("this model does not embed");
  const int texts = static_cast<int>(job->inputs.size());
  int64_t tokens = 0;
  for (const auto& input : job->inputs) tokens += static_cast<int64_t>(input.size());
  absl::MutexLock lock(&mu_);
  if (absl::Status room = RoomLocked(texts); !room.ok()) return room;
  job->times.arrival = MonotonicNow();
  encode_queue_.push_back(std::move(job));
  queued_texts_ += texts;
  encode_queued_tokens_ += tokens;
  ++stats_.encode_jobs;
  wake_.Signal();
  return absl::OkStatus();
}

void ModelWorker::Cancel(Job& job) {
  job.cancelled.store(true);
  absl::MutexLock lock(&mu_);
  wake_.Signal();
}

void ModelWorker::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    wake_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

WorkerStats ModelWorker::Stats() const {
  absl::MutexLock lock(&mu_);
  WorkerStats stats = stats_;
  stats.queued_texts = queued_texts_;
  return stats;
}

absl::Status ModelWorker::Expired(const Job& job, absl::Time now) const {
  // gRPC also cancels a call whose deadline passes, and the client's cancellation can arrive
  // before the server's own timer fires (the server's deadline counts from when it received the
  // call): a cancellation close to the deadline is the deadline's.
  constexpr absl::Duration kClockSkew = absl::Milliseconds(100);
  const bool cancelled = job.cancelled.load();
  if (now >= job.deadline || (cancelled && now + kClockSkew >= job.deadline)) {
    return absl::DeadlineExceededError("the request's deadline passed before it finished");
  }
  if (cancelled) return absl::CancelledError("the request was cancelled");
  return absl::OkStatus();
}

void ModelWorker::EndTranslation(TranslationJob& job, const absl::Status& status) {
  if (job.done) return;
  job.done = true;
  job.times.finished = MonotonicNow();
  if (job.on_done) job.on_done(status, job.times);
}

void ModelWorker::EndEncode(EncodeJob& job, const absl::Status& status,
                            std::vector<float>& embeddings) {
  if (job.done) return;
  job.done = true;
  job.times.finished = MonotonicNow();
  if (job.on_done) job.on_done(status, embeddings, job.times);
}

void ModelWorker::EndJob(Job& job, const absl::Status& status) {
  if (job.done) return;
  {
    absl::MutexLock lock(&mu_);
    if (absl::IsCancelled(status)) ++stats_.cancelled;
    if (absl::IsDeadlineExceeded(status)) ++stats_.deadline_exceeded;
  }
  if (auto* translation = dynamic_cast<TranslationJob*>(&job)) {
    EndTranslation(*translation, status);
  } else if (auto* encode = dynamic_cast<EncodeJob*>(&job)) {
    std::vector<float> none;
    EndEncode(*encode, status, none);
  }
}

bool ModelWorker::EncodeReady(absl::Time now) const {
  if (encode_queue_.empty()) return false;
  return stopping_ || !BatchEmpty() || encode_queued_tokens_ >= options_.encode_token_budget ||
         now >= encode_queue_.front()->times.arrival + options_.encode_max_wait;
}

bool ModelWorker::AdmissionDue() const {
  if (batch_ == nullptr || translate_queue_.empty()) return false;
  if (batch_->empty()) return true;
  if (!options_.continuous) return false;
  return translate_queued_tokens_ >= options_.admission_tokens ||
         stats_.decoding_steps - translate_queue_.front().queued_at_step >=
             options_.admission_wait_steps;
}

bool ModelWorker::NextWork(std::vector<QueuedText>& admit,
                           std::vector<std::shared_ptr<EncodeJob>>& encode,
                           std::vector<QueuedText>& expired_texts,
                           std::vector<std::shared_ptr<EncodeJob>>& expired_encodes) {
  absl::MutexLock lock(&mu_);
  for (;;) {
    if (stopping_) return false;
    const absl::Time now = MonotonicNow();
    // Drop what ended while it waited: cancelled, past its deadline, or failed elsewhere.
    for (auto it = translate_queue_.begin(); it != translate_queue_.end();) {
      if (it->job->done || !Expired(*it->job, now).ok()) {
        translate_queued_tokens_ -= static_cast<int64_t>(it->job->sources[it->index].size());
        expired_texts.push_back(std::move(*it));
        it = translate_queue_.erase(it);
        --queued_texts_;
      } else {
        ++it;
      }
    }
    for (auto it = encode_queue_.begin(); it != encode_queue_.end();) {
      if (!Expired(**it, now).ok()) {
        queued_texts_ -= static_cast<int>((*it)->inputs.size());
        for (const auto& input : (*it)->inputs) encode_queued_tokens_ -= input.size();
        expired_encodes.push_back(std::move(*it));
        it = encode_queue_.erase(it);
      } else {
        ++it;
      }
    }

    // Admission, oldest first, never skipping the head so that no text starves.
    if (AdmissionDue()) {
      int tokens = 0;
      int beams = 0;
      int pages = 0;
      while (!translate_queue_.empty()) {
        const QueuedText& next = translate_queue_.front();
        const int length = static_cast<int>(next.job->sources[next.index].size());
        const DecodingOptions& o = next.job->options;
        if (!admit.empty() && tokens + length > options_.batch_token_budget) break;
        if (beams + o.beam_size > batch_->free_beams()) break;
        if (pages + batch_->PagesFor(o) > batch_->free_pages()) break;
        tokens += length;
        beams += o.beam_size;
        pages += batch_->PagesFor(o);
        translate_queued_tokens_ -= length;
        admit.push_back(std::move(translate_queue_.front()));
        translate_queue_.pop_front();
        --queued_texts_;
      }
    }

    if (EncodeReady(now)) {
      int64_t tokens = 0;
      while (!encode_queue_.empty()) {
        int64_t job_tokens = 0;
        for (const auto& input : encode_queue_.front()->inputs) job_tokens += input.size();
        if (!encode.empty() && tokens + job_tokens > options_.encode_token_budget) break;
        tokens += job_tokens;
        encode_queued_tokens_ -= job_tokens;
        queued_texts_ -= static_cast<int>(encode_queue_.front()->inputs.size());
        encode.push_back(std::move(encode_queue_.front()));
        encode_queue_.pop_front();
      }
    }

    if (!admit.empty() || !encode.empty() || !BatchEmpty() || !expired_texts.empty() ||
        !expired_encodes.empty()) {
      return true;
    }
    if (!encode_queue_.empty()) {
      wake_.WaitWithTimeout(
          &mu_, encode_queue_.front()->times.arrival + options_.encode_max_wait - MonotonicNow());
    } else {
      wake_.Wait(&mu_);
    }
  }
}

void ModelWorker::Run() {
  std::vector<QueuedText> admit, expired_texts;
  std::vector<std::shared_ptr<EncodeJob>> encode, expired_encodes;
  for (;;) {
    admit.clear();
    encode.clear();
    expired_texts.clear();
    expired_encodes.clear();
    const bool running = NextWork(admit, encode, expired_texts, expired_encodes);
    const absl::Time now = MonotonicNow();
    for (QueuedText& text : expired_texts) {
      absl::Status why = Expired(*text.job, now);
      EndJob(*text.job, why.ok() ? absl::CancelledError("the request ended") : why);
    }
    for (auto& job : expired_encodes) {
      absl::Status why = Expired(*job, now);
      EndJob(*job, why.ok() ? absl::CancelledError("the request ended") : why);
    }
    if (!running) break;
    // Requests that ended (cancelled, expired, one of their texts failed) leave the batch now.
    SweepRunning(now);
    // While another model computes (before this one's turn, or after it when another waits),
    // this pool's threads sleep rather than spin in its time.
    auto rest = [this] { encode_workspace_.pool()->Rest(); };
    std::optional<ComputeGate::Lease> lease;
    if (gate_ != nullptr && (!encode.empty() || !admit.empty() || !BatchEmpty())) {
      const absl::Time wait_start = MonotonicNow();
      bool waited = false;
      lease.emplace(gate_->Acquire([&] {
        waited = true;
        rest();
      }));
      if (waited) {
        const absl::Time wait_end = MonotonicNow();
        {
          absl::MutexLock lock(&mu_);
          stats_.compute_wait_seconds += absl::ToDoubleSeconds(wait_end - wait_start);
        }
        SweepRunning(wait_end);  // what ended during the wait leaves first
      }
    }
    if (!encode.empty()) RunEncodeBatch(encode);
    if (!admit.empty()) AdmitTexts(admit);
    if (!BatchEmpty()) StepBatch();
    if (lease.has_value() && lease->Contended()) rest();
  }
  FailEverything(absl::UnavailableError("the server shut down before the request finished"));
}

void ModelWorker::SweepRunning(absl::Time now) {
  bool swept = false;
  for (auto it = running_.begin(); it != running_.end();) {
    TranslationJob& job = *it->second.job;
    absl::Status why = job.done ? absl::CancelledError("the request ended") : Expired(job, now);
    if (!why.ok()) {
      batch_->Cancel(it->first);
      EndJob(job, why);
      it = running_.erase(it);
      swept = true;
    } else {
      ++it;
    }
  }
  if (swept) {
    absl::MutexLock lock(&mu_);
    PublishBatchState();
  }
}

void ModelWorker::PublishBatchState() {
  stats_.running_sequences = batch_->num_sentences();
  stats_.cache_bytes_in_use = batch_->cache().bytes_in_use();
}

void ModelWorker::AdmitTexts(std::vector<QueuedText>& texts) {
  std::vector<DecodingBatch::Request> requests;
  requests.reserve(texts.size());
  for (const QueuedText& text : texts) {
    requests.push_back({text.job->sources[text.index], text.job->options});
  }
  // Their inference starts with the encoder pass: queue time ends here.
  const absl::Time now = MonotonicNow();
  absl::StatusOr<std::vector<DecodingBatch::SequenceId>> ids;
  try {
    ids = batch_->Admit(requests);
  } catch (const std::exception& e) {
    ids = absl::InternalError(absl::StrCat("the engine failed to encode the batch: ", e.what()));
  }
  if (!ids.ok()) {
    // The worker checked capacity and the server validated the inputs, so this is unexpected;
    // fail the texts' requests, not the worker.
    for (QueuedText& text : texts) EndJob(*text.job, ids.status());
    return;
  }
  if (observer_ != nullptr) {
    int tokens = 0;
    for (const auto& request : requests) tokens += static_cast<int>(request.source_ids.size());
    observer_->OnAdmission(static_cast<int>(texts.size()), tokens);
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    TranslationJob& job = *texts[i].job;
    if (!job.started) {
      job.started = true;
      job.times.started = now;
    }
    running_.emplace((*ids)[i], RunningText{std::move(texts[i].job), texts[i].index, 0});
  }
}

void ModelWorker::StepBatch() {
  const int sequences = batch_->num_sentences();
  const int rows = batch_->num_beams();
  std::vector<DecodingBatch::Finished> finished;
  try {
    finished = batch_->Step();
  } catch (const std::exception& e) {
    for (auto& [id, text] : running_) {
      batch_->Cancel(id);
      EndJob(*text.job, absl::InternalError(absl::StrCat("the engine failed: ", e.what())));
    }
    running_.clear();
    absl::MutexLock lock(&mu_);
    PublishBatchState();  // the batch is empty now, and no step follows to say so
    return;
  }
  if (observer_ != nullptr) observer_->OnDecodingStep(sequences, rows);
  {
    // Before the callbacks, so that a client that saw its result sees these counters too.
    absl::MutexLock lock(&mu_);
    ++stats_.decoding_steps;
    stats_.decoded_rows += rows;
    stats_.sentences += static_cast<int64_t>(finished.size());
    stats_.max_batch_sequences = std::max(stats_.max_batch_sequences, sequences);
    stats_.max_batch_rows = std::max(stats_.max_batch_rows, rows);
    PublishBatchState();
  }
  for (DecodingBatch::Finished& result : finished) {
    auto it = running_.find(result.id);
    if (it == running_.end()) continue;
    TranslationJob& job = *it->second.job;
    if (!job.done) {
      // A sentence cut at max_length ends on a token not streamed yet (an end-of-sentence token
      // is not part of its hypothesis).
      if (job.stream_tokens && job.on_tokens && !result.hypotheses.empty()) {
        const std::vector<int32_t>& tokens = result.hypotheses.front().tokens;
        if (tokens.size() > it->second.streamed) {
          job.on_tokens(it->second.index, tokens,
                        static_cast<int>(tokens.size() - it->second.streamed));
        }
      }
      if (job.on_result) job.on_result(it->second.index, result);
      if (--job.remaining == 0) EndTranslation(job, absl::OkStatus());
    }
    running_.erase(it);
  }
  for (auto& [id, text] : running_) {
    if (!text.job->stream_tokens || text.job->done || !text.job->on_tokens) continue;
    const std::vector<int32_t>* tokens = batch_->BestTokens(id);
    if (tokens == nullptr || tokens->size() <= text.streamed) continue;
    text.job->on_tokens(text.index, *tokens, static_cast<int>(tokens->size() - text.streamed));
    text.streamed = tokens->size();
  }
}

void ModelWorker::RunEncodeBatch(std::vector<std::shared_ptr<EncodeJob>>& jobs) {
  std::vector<int32_t> ids;
  std::vector<int> offsets = {0};
  for (const auto& job : jobs) {
    for (const auto& input : job->inputs) {
      ids.insert(ids.end(), input.begin(), input.end());
      offsets.push_back(static_cast<int>(ids.size()));
    }
  }
  const int texts = static_cast<int>(offsets.size()) - 1;
  const int d = embedder_->dimension();
  if (observer_ != nullptr) observer_->OnEncodeBatch(texts, static_cast<int>(ids.size()));
  const absl::Time started = MonotonicNow();
  for (auto& job : jobs) job->times.started = started;
  absl::Status status;
  // Jobs differ in whether they normalise: embed as the model does, then normalise per job.
  embeddings_.resize(static_cast<size_t>(texts) * d);
  std::vector<std::vector<int32_t>> inputs;
  inputs.reserve(texts);
  for (const auto& job : jobs) inputs.insert(inputs.end(), job->inputs.begin(), job->inputs.end());
  try {
    embedder_->Embed(inputs, encode_workspace_, embeddings_.data());
  } catch (const std::exception& e) {
    status = absl::InternalError(absl::StrCat("the engine failed to encode: ", e.what()));
  }
  size_t first = 0;
  for (auto& job : jobs) {
    const size_t count = job->inputs.size() * d;
    std::vector<float> out;
    if (status.ok()) {
      out.assign(embeddings_.begin() + first, embeddings_.begin() + first + count);
      if (job->normalize) {
        for (size_t v = 0; v < out.size(); v += d) {
          double norm = 0.0;
          for (int j = 0; j < d; ++j) norm += static_cast<double>(out[v + j]) * out[v + j];
          if (norm > 0.0) {
            const double scale = 1.0 / std::sqrt(norm);
            for (int j = 0; j < d; ++j) out[v + j] = static_cast<float>(out[v + j] * scale);
          }
        }
      }
    }
    first += count;
    EndEncode(*job, status, out);
  }
  absl::MutexLock lock(&mu_);
  ++stats_.encode_batches;
  stats_.encoded_texts += texts;
  stats_.max_encode_batch = std::max(stats_.max_encode_batch, texts);
}

void ModelWorker::FailEverything(const absl::Status& status) {
  for (auto& [id, text] : running_) {
    batch_->Cancel(id);
    EndJob(*text.job, status);
  }
  running_.clear();
  std::deque<QueuedText> texts;
  std::deque<std::shared_ptr<EncodeJob>> encodes;
  {
    absl::MutexLock lock(&mu_);
    texts.swap(translate_queue_);
    encodes.swap(encode_queue_);
    queued_texts_ = 0;
    encode_queued_tokens_ = 0;
    translate_queued_tokens_ = 0;
    stats_.running_sequences = 0;
    stats_.cache_bytes_in_use = batch_ != nullptr ? batch_->cache().bytes_in_use() : 0;
  }
  for (QueuedText& text : texts) EndJob(*text.job, status);
  for (auto& job : encodes) EndJob(*job, status);
}

}  // namespace rosetta::server
