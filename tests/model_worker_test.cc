// The per-model engine worker: results equal the engine's alone, continuous vs static admission,
// bounded queue, cancellation, deadlines, shutdown, encode batching and token streaming. Runs on
// the real aren-transliteration model.
#include "server/model_worker.h"

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <random>

#include "absl/time/clock.h"
#include "engine/model_loader.h"
#include "engine/sentence_embedding.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::HasSubstr;

// What a job delivered, collected from the worker's callbacks.
struct Outcome {
  std::map<int, std::vector<Hypothesis>> results;
  std::vector<int> completion_order;
  std::map<int, std::vector<int32_t>> streamed;
  absl::Status status;
  JobTimes times;
};

class ModelWorkerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LoadTranslationModel(testing::ArenModel("v2/aren-transliteration"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model).release();
    // The encoder behind Encode jobs: a non-owning handle on the suite's model.
    embedder_ = TranslationEncoderEmbeddings(
        std::shared_ptr<const TranslationModel>(model_, [](const TranslationModel*) {}), 512);
  }
  static void TearDownTestSuite() {
    embedder_.reset();
    delete model_;
    model_ = nullptr;
  }

  static std::vector<std::vector<int32_t>> RandomSources(int count, int max_length, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> length(1, max_length), token(3, 49);
    std::vector<std::vector<int32_t>> sources(count);
    for (auto& s : sources) {
      s.resize(length(rng));
      for (auto& id : s) id = token(rng);
    }
    return sources;
  }

  // A job whose callbacks fill `outcome` and fulfil `done` at the end.
  static std::shared_ptr<TranslationJob> MakeJob(std::vector<std::vector<int32_t>> sources,
                                                 const DecodingOptions& options, Outcome& outcome,
                                                 std::promise<void>& done) {
    auto job = std::make_shared<TranslationJob>();
    job->sources = std::move(sources);
    job->options = options;
    job->on_result = [&outcome](int index, DecodingBatch::Finished& result) {
      outcome.results[index] = result.hypotheses;
      outcome.completion_order.push_back(index);
    };
    job->on_tokens = [&outcome](int index, const std::vector<int32_t>& tokens, int new_count) {
      auto& seen = outcome.streamed[index];
      EXPECT_EQ(seen.size() + new_count, tokens.size());
      seen = tokens;
    };
    job->on_done = [&outcome, &done](const absl::Status& status, const JobTimes& times) {
      outcome.status = status;
      outcome.times = times;
      done.set_value();
    };
    return job;
  }

  static std::vector<Hypothesis> Alone(const std::vector<int32_t>& source,
                                       const DecodingOptions& options) {
    auto result = TranslateBatch(model_->transformer, {source}, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return (*result)[0];
  }

  // Greedy search of exactly `length` tokens (a long-running sentence) or at most `max_length`.
  static DecodingOptions GreedyOf(int length) {
    DecodingOptions options;
    options.beam_size = 1;
    options.min_length = options.max_length = length;
    return options;
  }
  static DecodingOptions GreedyUpTo(int max_length) {
    DecodingOptions options;
    options.beam_size = 1;
    options.max_length = max_length;
    return options;
  }
  // Waits until `worker` has run a few decoding steps (its first sentence is decoding).
  static void AwaitDecoding(const ModelWorker& worker) {
    while (worker.Stats().decoding_steps < 5) absl::SleepFor(absl::Microseconds(200));
  }

  static void ExpectSame(const std::vector<Hypothesis>& a, const std::vector<Hypothesis>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].tokens, b[i].tokens);
      EXPECT_NEAR(a[i].score, b[i].score, 1e-5);
    }
  }

  static TranslationModel* model_;
  static std::unique_ptr<EmbeddingModel> embedder_;
};

TranslationModel* ModelWorkerTest::model_ = nullptr;
std::unique_ptr<EmbeddingModel> ModelWorkerTest::embedder_;

TEST_F(ModelWorkerTest, ConcurrentJobsGetTheirOwnResults) {
  BatchingOptions options;
  options.num_threads = 2;
  ModelWorker worker(model_->transformer, embedder_.get(), options);
  constexpr int kJobs = 12;
  std::vector<Outcome> outcomes(kJobs);
  std::vector<std::promise<void>> done(kJobs);
  std::vector<std::vector<std::vector<int32_t>>> sources;
  std::vector<DecodingOptions> decoding(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    sources.push_back(RandomSources(1 + j % 4, 20, 100 + j));
    decoding[j].beam_size = 1 + j % 3;
    decoding[j].num_hypotheses = decoding[j].beam_size;
    decoding[j].max_length = 10 + j;
  }
  std::vector<std::thread> clients;
  for (int j = 0; j < kJobs; ++j) {
    clients.emplace_back([&, j] {
      ASSERT_TRUE(worker.Submit(MakeJob(sources[j], decoding[j], outcomes[j], done[j])).ok());
    });
  }
  for (auto& c : clients) c.join();
  for (int j = 0; j < kJobs; ++j) {
    done[j].get_future().wait();
    ASSERT_TRUE(outcomes[j].status.ok()) << outcomes[j].status;
    ASSERT_EQ(outcomes[j].results.size(), sources[j].size());
    for (size_t i = 0; i < sources[j].size(); ++i) {
      ExpectSame(outcomes[j].results[i], Alone(sources[j][i], decoding[j]));
    }
  }
  const WorkerStats stats = worker.Stats();
  EXPECT_EQ(stats.translation_jobs, kJobs);
  EXPECT_GT(stats.decoding_steps, 0);
  EXPECT_EQ(stats.running_sequences, 0);
  EXPECT_EQ(stats.cache_bytes_in_use, 0);
}

// A long translation is decoding; a short one submitted later finishes first when batching is
// continuous, and only after it when batching is static.
TEST_F(ModelWorkerTest, ContinuousBatchingLetsShortRequestsOvertake) {
  for (bool continuous : {true, false}) {
    SCOPED_TRACE(continuous ? "continuous" : "static");
    BatchingOptions options;
    options.continuous = continuous;
    ModelWorker worker(model_->transformer, embedder_.get(), options);
    const DecodingOptions long_options = GreedyOf(250);
    const DecodingOptions short_options = GreedyUpTo(3);
    Outcome long_outcome, short_outcome;
    std::promise<void> long_done, short_done;
    std::vector<int> order;
    absl::Mutex order_mu;
    auto long_job = MakeJob({{5, 6, 7, 8}}, long_options, long_outcome, long_done);
    auto short_job = MakeJob({{9, 10}}, short_options, short_outcome, short_done);
    auto record = [&](std::shared_ptr<TranslationJob>& job, int tag) {
      auto inner = job->on_done;
      job->on_done = [&order, &order_mu, inner, tag](const absl::Status& s, const JobTimes& t) {
        {
          absl::MutexLock lock(&order_mu);
          order.push_back(tag);
        }
        inner(s, t);
      };
    };
    record(long_job, 0);
    record(short_job, 1);
    ASSERT_TRUE(worker.Submit(long_job).ok());
    // Wait until the long one is decoding.
    AwaitDecoding(worker);
    ASSERT_TRUE(worker.Submit(short_job).ok());
    long_done.get_future().wait();
    short_done.get_future().wait();
    ASSERT_TRUE(long_outcome.status.ok());
    ASSERT_TRUE(short_outcome.status.ok());
    EXPECT_EQ(long_outcome.results[0][0].tokens.size(), 250u);
    EXPECT_EQ(order, continuous ? std::vector<int>({1, 0}) : std::vector<int>({0, 1}));
    if (continuous) {
      EXPECT_EQ(worker.Stats().max_batch_sequences, 2);
    }
  }
}

// Counts decoding steps and records admissions (texts, and the steps run before each).
class AdmissionRecorder : public WorkerObserver {
 public:
  struct Admission {
    int texts = 0;
    int tokens = 0;
    int64_t steps_before = 0;
  };
  void OnDecodingStep(int, int) override {
    absl::MutexLock lock(&mu_);
    ++steps_;
  }
  void OnAdmission(int texts, int tokens) override {
    absl::MutexLock lock(&mu_);
    admissions_.push_back({texts, tokens, steps_});
  }
  void OnEncodeBatch(int, int) override {}
  std::vector<Admission> admissions() const {
    absl::MutexLock lock(&mu_);
    return admissions_;
  }

 private:
  mutable absl::Mutex mu_;
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Admission> admissions_ ABSL_GUARDED_BY(mu_);
};

// While a sentence decodes, waiting texts join together: after admission_wait_steps steps, or
// as soon as they hold admission_tokens tokens; into an empty batch, at once.
TEST_F(ModelWorkerTest, ContinuousAdmissionGroupsWaitingTexts) {
  const DecodingOptions long_options = GreedyOf(250);
  const DecodingOptions short_options = GreedyUpTo(3);
  {
    SCOPED_TRACE("by steps");
    AdmissionRecorder recorder;
    BatchingOptions options;
    options.admission_wait_steps = 20;
    options.admission_tokens = 1000;
    ModelWorker worker(model_->transformer, embedder_.get(), options, &recorder);
    Outcome long_outcome, short_outcome;
    std::promise<void> long_done, short_done;
    ASSERT_TRUE(worker.Submit(MakeJob({{5, 6, 7, 8}}, long_options, long_outcome, long_done)).ok());
    AwaitDecoding(worker);
    const int64_t before = worker.Stats().decoding_steps;
    ASSERT_TRUE(worker.Submit(MakeJob({{9, 10}}, short_options, short_outcome, short_done)).ok());
    const int64_t after = worker.Stats().decoding_steps;
    short_done.get_future().wait();
    long_done.get_future().wait();
    ASSERT_TRUE(short_outcome.status.ok()) << short_outcome.status;
    ExpectSame(short_outcome.results[0], Alone({9, 10}, short_options));
    const auto admissions = recorder.admissions();
    ASSERT_EQ(admissions.size(), 2u);
    EXPECT_EQ(admissions[0].steps_before, 0);  // empty batch: at once
    EXPECT_GE(admissions[1].steps_before, before + 20);
    EXPECT_LE(admissions[1].steps_before, after + 20);
  }
  {
    SCOPED_TRACE("by tokens");
    // The three texts must all be queued while the long one decodes (about 25 ms here). On a
    // busy machine this thread may sleep through it; such a run tests nothing, so it is
    // repeated.
    bool meaningful = false;
    for (int attempt = 0; attempt < 5 && !meaningful; ++attempt) {
      AdmissionRecorder recorder;
      BatchingOptions options;
      options.admission_wait_steps = 100000;
      options.admission_tokens = 9;  // three texts of 3 tokens
      ModelWorker worker(model_->transformer, embedder_.get(), options, &recorder);
      Outcome long_outcome;
      std::promise<void> long_done;
      std::future<void> long_finished = long_done.get_future();
      ASSERT_TRUE(
          worker.Submit(MakeJob({{5, 6, 7, 8}}, long_options, long_outcome, long_done)).ok());
      AwaitDecoding(worker);
      std::vector<Outcome> outcomes(3);
      std::vector<std::promise<void>> done(3);
      const std::vector<std::vector<int32_t>> sources = {{9, 10, 11}, {12, 13, 14}, {15, 16, 17}};
      for (int i = 0; i < 3; ++i) {
        // Two steps apart.
        const int64_t steps = worker.Stats().decoding_steps;
        while (i > 0 && worker.Stats().decoding_steps < steps + 2 &&
               long_finished.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
          absl::SleepFor(absl::Microseconds(100));
        }
        ASSERT_TRUE(worker.Submit(MakeJob({sources[i]}, short_options, outcomes[i], done[i])).ok());
      }
      meaningful = long_finished.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
      for (int i = 0; i < 3; ++i) {
        done[i].get_future().wait();
        ASSERT_TRUE(outcomes[i].status.ok()) << outcomes[i].status;
        ExpectSame(outcomes[i].results[0], Alone(sources[i], short_options));
      }
      long_finished.wait();
      if (!meaningful) continue;
      const auto admissions = recorder.admissions();
      ASSERT_EQ(admissions.size(), 2u);
      EXPECT_EQ(admissions[1].texts, 3);
      EXPECT_EQ(admissions[1].tokens, 9);
      EXPECT_LT(admissions[1].steps_before, 250);  // before the long one ended
    }
    EXPECT_TRUE(meaningful) << "the long translation ended before the texts were queued, 5 times";
  }
}

// max_running_sequences 0: 8 beams per engine thread, at least 16; an explicit value stays.
TEST_F(ModelWorkerTest, RunningBeamsDefaultToEightPerThread) {
  for (auto [threads, requested, expected] :
       {std::tuple{1, 0, 16}, std::tuple{2, 0, 16}, std::tuple{4, 0, 32}, std::tuple{2, 40, 40}}) {
    BatchingOptions options;
    options.num_threads = threads;
    options.max_running_sequences = requested;
    ModelWorker worker(model_->transformer, embedder_.get(), options);
    EXPECT_EQ(worker.options().max_running_sequences, expected);
    EXPECT_EQ(worker.max_beams(), expected);
    DecodingOptions too_wide;
    too_wide.beam_size = expected + 1;
    EXPECT_EQ(worker.CheckFits(too_wide).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(ModelWorkerTest, FullQueueIsRejectedAtOnce) {
  BatchingOptions options;
  options.max_queued_texts = 4;
  options.max_running_sequences = 1;  // the first text runs, the rest wait
  ModelWorker worker(model_->transformer, embedder_.get(), options);
  const DecodingOptions slow = GreedyOf(250);
  Outcome first_outcome, second_outcome;
  std::promise<void> first_done, second_done;
  ASSERT_TRUE(worker.Submit(MakeJob({{5}}, slow, first_outcome, first_done)).ok());
  while (worker.Stats().running_sequences == 0 && worker.Stats().decoding_steps == 0) {
    absl::SleepFor(absl::Microseconds(200));
  }
  ASSERT_TRUE(
      worker.Submit(MakeJob(RandomSources(4, 5, 1), slow, second_outcome, second_done)).ok());
  Outcome rejected_outcome;
  std::promise<void> rejected_done;
  absl::Status rejected = worker.Submit(MakeJob({{7}}, slow, rejected_outcome, rejected_done));
  EXPECT_TRUE(absl::IsResourceExhausted(rejected)) << rejected;
  EXPECT_THAT(rejected.message(), HasSubstr("queue is full"));
  EXPECT_EQ(worker.Stats().rejected_queue_full, 1);
  first_done.get_future().wait();
  second_done.get_future().wait();
  EXPECT_TRUE(first_outcome.status.ok());
  EXPECT_TRUE(second_outcome.status.ok());
}

TEST_F(ModelWorkerTest, CancelledAndExpiredJobsLeaveQueueAndBatch) {
  BatchingOptions options;
  options.max_running_sequences = 2;
  ModelWorker worker(model_->transformer, embedder_.get(), options);
  DecodingOptions slow;
  slow.beam_size = 2;
  slow.min_length = slow.max_length = 250;
  Outcome running_outcome, queued_outcome, expiring_outcome, later_outcome;
  std::promise<void> running_done, queued_done, expiring_done, later_done;
  auto running = MakeJob({{5, 6}}, slow, running_outcome, running_done);
  auto queued = MakeJob({{7, 8}}, slow, queued_outcome, queued_done);
  auto expiring = MakeJob({{9}}, slow, expiring_outcome, expiring_done);
  expiring->deadline = MonotonicNow() - absl::Milliseconds(1);  // expires while it waits
  ASSERT_TRUE(worker.Submit(running).ok());
  ASSERT_TRUE(worker.Submit(queued).ok());
  ASSERT_TRUE(worker.Submit(expiring).ok());
  while (worker.Stats().decoding_steps < 3) absl::SleepFor(absl::Microseconds(200));
  worker.Cancel(*queued);   // waiting in the queue
  worker.Cancel(*running);  // decoding
  running_done.get_future().wait();
  queued_done.get_future().wait();
  EXPECT_TRUE(absl::IsCancelled(running_outcome.status)) << running_outcome.status;
  EXPECT_TRUE(absl::IsCancelled(queued_outcome.status)) << queued_outcome.status;
  expiring_done.get_future().wait();
  EXPECT_TRUE(absl::IsDeadlineExceeded(expiring_outcome.status)) << expiring_outcome.status;
  // A deadline that passes while the sentence decodes: 250 steps take longer than 1 ms.
  Outcome decoding_outcome;
  std::promise<void> decoding_done;
  auto decoding = MakeJob({{20, 21}}, slow, decoding_outcome, decoding_done);
  decoding->deadline = MonotonicNow() + absl::Milliseconds(1);
  ASSERT_TRUE(worker.Submit(decoding).ok());
  decoding_done.get_future().wait();
  EXPECT_TRUE(absl::IsDeadlineExceeded(decoding_outcome.status)) << decoding_outcome.status;
  // The worker keeps serving, and its memory came back.
  DecodingOptions quick;
  quick.beam_size = 2;
  quick.max_length = 20;
  ASSERT_TRUE(worker.Submit(MakeJob({{11, 12, 13}}, quick, later_outcome, later_done)).ok());
  later_done.get_future().wait();
  ASSERT_TRUE(later_outcome.status.ok());
  ExpectSame(later_outcome.results[0], Alone({11, 12, 13}, quick));
  const WorkerStats stats = worker.Stats();
  EXPECT_EQ(stats.cancelled, 2);
  EXPECT_EQ(stats.deadline_exceeded, 2);
  EXPECT_EQ(stats.cache_bytes_in_use, 0);
  EXPECT_EQ(stats.queued_texts, 0);
}

TEST_F(ModelWorkerTest, StopEndsEveryJobWithUnavailable) {
  BatchingOptions options;
  options.max_running_sequences = 1;
  auto worker = std::make_unique<ModelWorker>(model_->transformer, embedder_.get(), options);
  const DecodingOptions slow = GreedyOf(250);
  Outcome a, b;
  std::promise<void> a_done, b_done;
  ASSERT_TRUE(worker->Submit(MakeJob({{5}}, slow, a, a_done)).ok());
  ASSERT_TRUE(worker->Submit(MakeJob({{6}}, slow, b, b_done)).ok());
  worker->Stop();
  a_done.get_future().wait();
  b_done.get_future().wait();
  EXPECT_TRUE(absl::IsUnavailable(a.status) || a.status.ok()) << a.status;
  EXPECT_TRUE(absl::IsUnavailable(b.status)) << b.status;
  Outcome c;
  std::promise<void> c_done;
  EXPECT_TRUE(absl::IsUnavailable(worker->Submit(MakeJob({{7}}, slow, c, c_done))));
}

TEST_F(ModelWorkerTest, GreedyTokensAreStreamedAsDecoded) {
  ModelWorker worker(model_->transformer, embedder_.get(), BatchingOptions{});
  DecodingOptions greedy;
  greedy.beam_size = 1;
  Outcome outcome;
  std::promise<void> done;
  auto job = MakeJob({{14, 15, 16, 17, 18}}, greedy, outcome, done);
  job->stream_tokens = true;
  ASSERT_TRUE(worker.Submit(job).ok());
  done.get_future().wait();
  ASSERT_TRUE(outcome.status.ok());
  ASSERT_FALSE(outcome.results[0][0].tokens.empty());
  EXPECT_EQ(outcome.streamed[0], outcome.results[0][0].tokens);
  // Cut at max_length: the last token (decoded in the sentence's final step) is streamed too.
  Outcome cut_outcome;
  std::promise<void> cut_done;
  auto cut = MakeJob({{14, 15, 16, 17, 18}}, GreedyOf(3), cut_outcome, cut_done);
  cut->stream_tokens = true;
  ASSERT_TRUE(worker.Submit(cut).ok());
  cut_done.get_future().wait();
  ASSERT_TRUE(cut_outcome.status.ok());
  ASSERT_EQ(cut_outcome.results[0][0].tokens.size(), 3u);
  EXPECT_EQ(cut_outcome.streamed[0], cut_outcome.results[0][0].tokens);
}

TEST_F(ModelWorkerTest, EncodeJobsAreBatchedAndEqualAlone) {
  BatchingOptions options;
  options.encode_max_wait = absl::Milliseconds(200);  // long enough to collect all below
  ModelWorker worker(model_->transformer, embedder_.get(), options);
  constexpr int kJobs = 6;
  std::vector<std::vector<float>> results(kJobs);
  std::vector<absl::Status> statuses(kJobs);
  std::vector<std::promise<void>> done(kJobs);
  std::vector<std::vector<std::vector<int32_t>>> inputs;
  for (int j = 0; j < kJobs; ++j) {
    inputs.push_back(RandomSources(1 + j % 3, 30, 200 + j));
    auto job = std::make_shared<EncodeJob>();
    job->inputs = inputs[j];
    job->normalize = j % 2 == 0;
    job->on_done = [&, j](const absl::Status& s, std::vector<float>& e, const JobTimes&) {
      statuses[j] = s;
      results[j] = e;
      done[j].set_value();
    };
    ASSERT_TRUE(worker.Submit(job).ok());
  }
  const int d = model_->transformer->config.d_model;
  Workspace workspace;
  for (int j = 0; j < kJobs; ++j) {
    done[j].get_future().wait();
    ASSERT_TRUE(statuses[j].ok()) << statuses[j];
    ASSERT_EQ(results[j].size(), inputs[j].size() * d);
    for (size_t i = 0; i < inputs[j].size(); ++i) {
      std::vector<float> alone(d);
      const std::vector<int> offsets = {0, static_cast<int>(inputs[j][i].size())};
      MeanPooledEncoderEmbeddings(*model_->transformer, inputs[j][i], offsets, j % 2 == 0,
                                  workspace, alone.data());
      for (int k = 0; k < d; ++k) ASSERT_NEAR(results[j][i * d + k], alone[k], 1e-5);
    }
  }
  const WorkerStats stats = worker.Stats();
  EXPECT_EQ(stats.encode_jobs, kJobs);
  EXPECT_GT(stats.max_encode_batch, 1);
  EXPECT_LT(stats.encode_batches, kJobs);
}

// Holds the worker inside its first decoding step until released, and records Encode batches.
class StepGate : public WorkerObserver {
 public:
  void OnDecodingStep(int, int) override {
    absl::MutexLock lock(&mu_);
    if (steps_++ > 0) return;
    entered_ = true;
    mu_.Await(absl::Condition(&released_));
  }
  void OnAdmission(int, int) override {}
  void OnEncodeBatch(int texts, int tokens) override {
    absl::MutexLock lock(&mu_);
    encode_batches_.push_back({texts, tokens});
  }
  void AwaitEntered() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&entered_));
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    released_ = true;
  }
  std::vector<std::pair<int, int>> encode_batches() {
    absl::MutexLock lock(&mu_);
    return encode_batches_;
  }

 private:
  absl::Mutex mu_;
  int steps_ ABSL_GUARDED_BY(mu_) = 0;
  bool entered_ ABSL_GUARDED_BY(mu_) = false;
  bool released_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::pair<int, int>> encode_batches_ ABSL_GUARDED_BY(mu_);
};

// With no Encode wait (the default), Encode jobs that arrive while the worker is busy run
// together as soon as it is free, split by the encode token budget, oldest first.
TEST_F(ModelWorkerTest, EncodeJobsQueuedWhileBusyRunTogether) {
  StepGate gate;
  BatchingOptions options;
  options.encode_token_budget = 20;
  ASSERT_EQ(options.encode_max_wait, absl::ZeroDuration());
  ModelWorker worker(model_->transformer, embedder_.get(), options, &gate);
  const DecodingOptions long_options = GreedyOf(50);
  Outcome long_outcome;
  std::promise<void> long_done;
  ASSERT_TRUE(worker.Submit(MakeJob({{5, 6, 7, 8}}, long_options, long_outcome, long_done)).ok());
  gate.AwaitEntered();  // the worker is inside its first step
  constexpr int kJobs = 4;
  std::vector<std::promise<void>> done(kJobs);
  std::vector<absl::Status> statuses(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    auto job = std::make_shared<EncodeJob>();
    job->inputs = {std::vector<int32_t>(10, 5 + j)};  // 10 tokens: two jobs fill the budget
    job->on_done = [&, j](const absl::Status& s, std::vector<float>&, const JobTimes&) {
      statuses[j] = s;
      done[j].set_value();
    };
    if (absl::Status s = worker.Submit(job); !s.ok()) {
      statuses[j] = s;  // fails below; the gate must still be released
      done[j].set_value();
    }
  }
  gate.Release();
  for (int j = 0; j < kJobs; ++j) {
    done[j].get_future().wait();
    EXPECT_TRUE(statuses[j].ok()) << statuses[j];
  }
  long_done.get_future().wait();
  ASSERT_TRUE(long_outcome.status.ok()) << long_outcome.status;
  EXPECT_EQ(gate.encode_batches(), (std::vector<std::pair<int, int>>{{2, 20}, {2, 20}}));
}

// Encode jobs that end while they wait (the worker held inside a decoding step) leave the queue
// with the reason, counted; a cancellation past the deadline is the deadline's (gRPC cancels a
// call whose deadline passes).
TEST_F(ModelWorkerTest, EncodeJobsCancelledOrExpiredWhileQueuedEnd) {
  StepGate gate;
  ModelWorker worker(model_->transformer, embedder_.get(), BatchingOptions{}, &gate);
  Outcome long_outcome;
  std::promise<void> long_done;
  ASSERT_TRUE(worker.Submit(MakeJob({{5, 6, 7, 8}}, GreedyOf(20), long_outcome, long_done)).ok());
  gate.AwaitEntered();
  constexpr int kJobs = 4;  // cancelled, expired, cancelled after its deadline, served
  std::vector<std::shared_ptr<EncodeJob>> jobs(kJobs);
  std::vector<std::promise<void>> done(kJobs);
  std::vector<absl::Status> statuses(kJobs, absl::UnknownError("not ended"));
  for (int j = 0; j < kJobs; ++j) {
    jobs[j] = std::make_shared<EncodeJob>();
    jobs[j]->inputs = {std::vector<int32_t>(6, 5 + j)};
    if (j == 1 || j == 2) jobs[j]->deadline = MonotonicNow() - absl::Milliseconds(1);
    jobs[j]->on_done = [&, j](const absl::Status& s, std::vector<float>&, const JobTimes&) {
      statuses[j] = s;
      done[j].set_value();
    };
    if (absl::Status s = worker.Submit(jobs[j]); !s.ok()) {
      statuses[j] = s;
      done[j].set_value();
    }
  }
  worker.Cancel(*jobs[0]);
  worker.Cancel(*jobs[2]);
  gate.Release();
  for (auto& d : done) d.get_future().wait();
  EXPECT_TRUE(absl::IsCancelled(statuses[0])) << statuses[0];
  EXPECT_TRUE(absl::IsDeadlineExceeded(statuses[1])) << statuses[1];
  EXPECT_TRUE(absl::IsDeadlineExceeded(statuses[2])) << statuses[2];
  EXPECT_TRUE(statuses[3].ok()) << statuses[3];
  long_done.get_future().wait();
  EXPECT_TRUE(long_outcome.status.ok()) << long_outcome.status;
  const WorkerStats stats = worker.Stats();
  EXPECT_EQ(stats.cancelled, 1);
  EXPECT_EQ(stats.deadline_exceeded, 2);
  EXPECT_EQ(stats.queued_texts, 0);
  EXPECT_EQ(gate.encode_batches(), (std::vector<std::pair<int, int>>{{1, 6}}));
}

// Two workers sharing a ComputeGate take turns: while one is inside a decoding step (holding the
// lease), the other's Encode job waits at the gate, and runs once the step ends.
TEST_F(ModelWorkerTest, WorkersSharingAComputeGateTakeTurns) {
  ComputeGate compute_gate;
  StepGate hold;
  ModelWorker translating(model_->transformer, embedder_.get(), BatchingOptions{}, &hold,
                          &compute_gate);
  ModelWorker encoding(model_->transformer, embedder_.get(), BatchingOptions{}, nullptr,
                       &compute_gate);
  Outcome translated;
  std::promise<void> translated_done;
  ASSERT_TRUE(
      translating.Submit(MakeJob({{5, 6, 7}}, GreedyOf(10), translated, translated_done)).ok());
  hold.AwaitEntered();  // `translating` holds the lease inside its first step

  std::promise<void> encoded_done;
  std::atomic<bool> released{false};
  std::atomic<bool> encoded_before_release{false};
  absl::Status encode_status;
  auto job = std::make_shared<EncodeJob>();
  job->inputs = {{9, 10, 11}};
  job->on_done = [&](const absl::Status& s, std::vector<float>&, const JobTimes&) {
    encode_status = s;
    encoded_before_release = !released.load();
    encoded_done.set_value();
  };
  const absl::Status submitted = encoding.Submit(job);
  // The Encode worker reaches the gate and waits there for its turn.
  while (submitted.ok() && compute_gate.Waiting() < 1 && !encoded_before_release.load()) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  absl::SleepFor(absl::Milliseconds(20));  // a wait long enough to be counted for sure
  released = true;
  hold.Release();
  ASSERT_TRUE(submitted.ok()) << submitted;
  encoded_done.get_future().wait();
  EXPECT_FALSE(encoded_before_release.load());
  EXPECT_TRUE(encode_status.ok()) << encode_status;
  EXPECT_GE(encoding.Stats().compute_wait_seconds, 0.015);  // rosetta_compute_wait_seconds_total
  translated_done.get_future().wait();
  EXPECT_TRUE(translated.status.ok()) << translated.status;
  ExpectSame(translated.results[0], Alone({5, 6, 7}, GreedyOf(10)));
}

}  // namespace
}  // namespace rosetta::server
