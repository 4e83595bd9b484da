#include "server/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <future>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"
#include "proto/status_names.h"

namespace rosetta::server {

namespace {

// Latency of a call: a cached short request takes about a millisecond, a long batch translation
// of 128 texts can take a minute.
const prometheus::Histogram::BucketBoundaries kSecondsBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
// Sentences and beams per decoding step: powers of two up to 512 running beams.
const prometheus::Histogram::BucketBoundaries kBatchBuckets = {1,  2,  4,   8,   16,
                                                               32, 64, 128, 256, 512};
// Source tokens admitted in one encoder pass: the default budget is 4096.
const prometheus::Histogram::BucketBoundaries kTokenBuckets = {8,    32,   128,  512,  1024,
                                                               2048, 4096, 8192, 16384};

prometheus::ClientMetric Value(double value, std::vector<prometheus::ClientMetric::Label> labels,
                               bool counter) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return metric;
}

// The whole of a small /proc file. POSIX reads into a heap string: scrapes run on civetweb's
// threads, whose stacks are small (an ifstream overflowed one under AddressSanitizer).
std::string ReadProcFile(const char* path) {
  std::string text;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char chunk[512];
  for (ssize_t n; (n = read(fd, chunk, sizeof(chunk))) > 0;) text.append(chunk, n);
  close(fd);
  return text;
}

// Seconds since the epoch at which the machine booted (/proc/stat btime).
double BootTime() {
  static const double boot_time = [] {
    const std::string stat = ReadProcFile("/proc/stat");
    const size_t at = stat.find("\nbtime ");
    return at == std::string::npos ? 0.0 : std::strtod(stat.c_str() + at + 7, nullptr);
  }();
  return boot_time;
}

// CPU seconds, resident bytes and start time of this process, from /proc/self/stat.
bool ReadProcessStat(double* cpu_seconds, double* resident_bytes, double* start_seconds) {
  const std::string stat = ReadProcFile("/proc/self/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  // Fields after the command name, starting with field 3 (state).
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  if (fields.size() < 22) return false;
  double utime = 0, stime = 0, start = 0, rss = 0;
  if (!absl::SimpleAtod(fields[11], &utime) || !absl::SimpleAtod(fields[12], &stime) ||
      !absl::SimpleAtod(fields[19], &start) || !absl::SimpleAtod(fields[21], &rss)) {
    return false;
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  *cpu_seconds = (utime + stime) / ticks;
  *resident_bytes = rss * static_cast<double>(sysconf(_SC_PAGESIZE));
  *start_seconds = BootTime() + start / ticks;
  return true;
}

}  // namespace

class Metrics::StepObserver final : public WorkerObserver {
 public:
  StepObserver(Metrics& metrics, const std::string& model)
      : batch_sequences_(metrics.batch_sequences_->Add({{"model", model}}, kBatchBuckets)),
        batch_rows_(metrics.batch_rows_->Add({{"model", model}}, kBatchBuckets)),
        admitted_tokens_(metrics.admitted_tokens_->Add({{"model", model}}, kTokenBuckets)),
        encode_batch_texts_(metrics.encode_batch_texts_->Add({{"model", model}}, kBatchBuckets)) {}

  void OnDecodingStep(int sequences, int rows) override {
    batch_sequences_.Observe(sequences);
    batch_rows_.Observe(rows);
  }
  void OnAdmission(int texts, int tokens) override { admitted_tokens_.Observe(tokens); }
  void OnEncodeBatch(int texts, int tokens) override { encode_batch_texts_.Observe(texts); }

 private:
  prometheus::Histogram& batch_sequences_;
  prometheus::Histogram& batch_rows_;
  prometheus::Histogram& admitted_tokens_;
  prometheus::Histogram& encode_batch_texts_;
};

// What is read from the workers and the process at scrape time.
class Metrics::PulledMetrics final : public prometheus::Collectable {
 public:
  PulledMetrics(const std::atomic<const ModelRegistry*>& registry,
                const std::atomic<const TlsCertificates*>& tls,
                const std::atomic<const ApiKeyFile*>& api_keys)
      : registry_(registry), tls_(tls), api_keys_(api_keys) {}

  // Runs on a thread of its own: civetweb's request threads have small stacks, which the many
  // temporaries below overflowed under AddressSanitizer. A scrape comes every few seconds; a
  // thread per scrape costs nothing next to that.
  std::vector<prometheus::MetricFamily> Collect() const override {
    return std::async(std::launch::async, [this] { return CollectNow(); }).get();
  }

 private:
  std::vector<prometheus::MetricFamily> CollectNow() const {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> families;
    auto family = [&families](const char* name, const char* help, MetricType type) {
      families.push_back({name, help, type, {}});
      return families.size() - 1;
    };
    const size_t running =
        family("rosetta_running_sequences", "Sentences in the model's running decode batch.",
               MetricType::Gauge);
    const size_t waiting =
        family("rosetta_waiting_texts",
               "Texts waiting in the model's queue (translation and encoding).", MetricType::Gauge);
    const size_t capacity =
        family("rosetta_queue_capacity_texts",
               "Texts the model's queue holds before it rejects requests.", MetricType::Gauge);
    const size_t cache_used =
        family("rosetta_kv_cache_bytes_used",
               "Bytes of the self-attention cache reserved by running beams.", MetricType::Gauge);
    const size_t cache_capacity =
        family("rosetta_kv_cache_bytes_capacity", "Bytes of the model's self-attention cache.",
               MetricType::Gauge);
    const size_t rejections = family(
        "rosetta_queue_rejections_total",
        "Requests refused with RESOURCE_EXHAUSTED: the queue was full.", MetricType::Counter);
    const size_t ended = family(
        "rosetta_requests_ended_early_total",
        "Requests removed from the queue or the batch before they finished.", MetricType::Counter);
    const size_t steps =
        family("rosetta_decoding_steps_total", "Decoding steps run.", MetricType::Counter);
    const size_t compute_wait = family(
        "rosetta_compute_wait_seconds_total",
        "Time the model's worker waited for other models of this daemon to finish their turn on "
        "the CPUs.",
        MetricType::Counter);
    const size_t load =
        family("rosetta_model_load_seconds", "Time the model took to load.", MetricType::Gauge);
    const size_t info =
        family("rosetta_model_info", "The loaded model (value 1) and its kind.", MetricType::Gauge);
    if (const ModelRegistry* registry = registry_.load()) {
      for (const auto& served : registry->models()) {
        const WorkerStats stats = served->worker->Stats();
        const std::vector<prometheus::ClientMetric::Label> model = {{"model", served->name}};
        families[running].metric.push_back(Value(stats.running_sequences, model, false));
        families[waiting].metric.push_back(Value(stats.queued_texts, model, false));
        families[capacity].metric.push_back(
            Value(served->worker->options().max_queued_texts, model, false));
        families[cache_used].metric.push_back(Value(stats.cache_bytes_in_use, model, false));
        families[cache_capacity].metric.push_back(Value(stats.cache_bytes_capacity, model, false));
        families[rejections].metric.push_back(Value(stats.rejected_queue_full, model, true));
        families[ended].metric.push_back(
            Value(stats.cancelled, {{"model", served->name}, {"reason", "cancelled"}}, true));
        families[ended].metric.push_back(Value(
            stats.deadline_exceeded, {{"model", served->name}, {"reason", "deadline"}}, true));
        families[steps].metric.push_back(Value(stats.decoding_steps, model, true));
        families[compute_wait].metric.push_back(Value(stats.compute_wait_seconds, model, true));
        families[load].metric.push_back(Value(served->load_seconds, model, false));
        const bool translates = served->translates();
        families[info].metric.push_back(Value(
            1,
            {{"model", served->name},
             {"kind", translates ? "translation" : "embedding"},
             {"format", translates ? served->model->format : "huggingface"},
             {"quantization", served->embedder->weight_type()},
             {"compute_type", std::string(ComputeTypeName(served->embedder->compute_type()))}},
            false));
      }
    }
    if (const TlsCertificates* tls = tls_.load()) {
      families[family("rosetta_tls_certificate_expiry_timestamp_seconds",
                      "When the first certificate of the chain in use (the server's or an "
                      "intermediate) expires, in seconds since the epoch.",
                      MetricType::Gauge)]
          .metric.push_back(
              Value(absl::ToDoubleSeconds(tls->summary().chain_not_after - absl::UnixEpoch()), {},
                    false));
      const size_t updates =
          family("rosetta_tls_certificate_updates_total",
                 "Changes of the TLS files: taken into use (accepted) or not (refused).",
                 MetricType::Counter);
      families[updates].metric.push_back(
          Value(tls->updates_accepted(), {{"result", "accepted"}}, true));
      families[updates].metric.push_back(
          Value(tls->updates_refused(), {{"result", "refused"}}, true));
      families[family("rosetta_tls_files_refused",
                      "1 while the TLS files on disk are not in use (unreadable, failing the "
                      "checks, or their copies cannot be written) and an older certificate is "
                      "served.",
                      MetricType::Gauge)]
          .metric.push_back(Value(tls->files_refused() ? 1 : 0, {}, false));
    }
    if (const ApiKeyFile* keys = api_keys_.load()) {
      families[family("rosetta_api_keys", "API keys in use (--api_keys_file).", MetricType::Gauge)]
          .metric.push_back(Value(static_cast<double>(keys->size()), {}, false));
      const size_t updates =
          family("rosetta_api_keys_updates_total",
                 "Changes of the API keys file: taken into use (accepted) or not (refused).",
                 MetricType::Counter);
      families[updates].metric.push_back(
          Value(keys->updates_accepted(), {{"result", "accepted"}}, true));
      families[updates].metric.push_back(
          Value(keys->updates_refused(), {{"result", "refused"}}, true));
      families[family("rosetta_api_keys_file_refused",
                      "1 while the API keys file on disk is refused (unreadable or failing the "
                      "checks) and the keys read before are still accepted.",
                      MetricType::Gauge)]
          .metric.push_back(Value(keys->file_refused() ? 1 : 0, {}, false));
    }
    double cpu = 0, resident = 0, start = 0;
    if (ReadProcessStat(&cpu, &resident, &start)) {
      families[family("process_cpu_seconds_total", "User and system CPU time spent in seconds.",
                      MetricType::Counter)]
          .metric.push_back(Value(cpu, {}, true));
      families[family("process_resident_memory_bytes", "Resident memory size in bytes.",
                      MetricType::Gauge)]
          .metric.push_back(Value(resident, {}, false));
      families[family("process_start_time_seconds",
                      "Start time of the process since unix epoch in seconds.", MetricType::Gauge)]
          .metric.push_back(Value(start, {}, false));
    }
    return families;
  }

  const std::atomic<const ModelRegistry*>& registry_;
  const std::atomic<const TlsCertificates*>& tls_;
  const std::atomic<const ApiKeyFile*>& api_keys_;
};

Metrics::Metrics()
    : registry_pushed_(std::make_shared<prometheus::Registry>()),
      pulled_(std::make_shared<PulledMetrics>(registry_, tls_, api_keys_)) {
  prometheus::Registry& r = *registry_pushed_;
  requests_ = &prometheus::BuildCounter()
                   .Name("rosetta_requests_total")
                   .Help("Finished gRPC calls by method, model and status code.")
                   .Register(r);
  request_seconds_ = &prometheus::BuildHistogram()
                          .Name("rosetta_request_duration_seconds")
                          .Help("Time from a call's arrival to its answer.")
                          .Register(r);
  queue_seconds_ = &prometheus::BuildHistogram()
                        .Name("rosetta_queue_duration_seconds")
                        .Help("Time a request waited before the engine started on it.")
                        .Register(r);
  inference_seconds_ = &prometheus::BuildHistogram()
                            .Name("rosetta_inference_duration_seconds")
                            .Help("Time from the engine's start on a request to its last result.")
                            .Register(r);
  input_tokens_ = &prometheus::BuildCounter()
                       .Name("rosetta_input_tokens_total")
                       .Help("Source tokens of finished requests, special tokens included.")
                       .Register(r);
  generated_tokens_ = &prometheus::BuildCounter()
                           .Name("rosetta_generated_tokens_total")
                           .Help("Decoding steps of finished translations.")
                           .Register(r);
  batch_sequences_ = &prometheus::BuildHistogram()
                          .Name("rosetta_batch_sequences")
                          .Help("Sentences decoded together in one decoding step.")
                          .Register(r);
  batch_rows_ = &prometheus::BuildHistogram()
                     .Name("rosetta_batch_beams")
                     .Help("Beams (rows) decoded together in one decoding step.")
                     .Register(r);
  admitted_tokens_ = &prometheus::BuildHistogram()
                          .Name("rosetta_admitted_tokens")
                          .Help("Source tokens that joined the running batch in one encoder pass.")
                          .Register(r);
  encode_batch_texts_ = &prometheus::BuildHistogram()
                             .Name("rosetta_encode_batch_texts")
                             .Help("Texts embedded together in one Encode batch.")
                             .Register(r);
}

Metrics::~Metrics() = default;

absl::Status Metrics::Serve(const std::string& listen) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  exposer_->RegisterCollectable(registry_pushed_);
  exposer_->RegisterCollectable(pulled_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? 0 : ports.front();
  return absl::OkStatus();
}

void Metrics::StopServing() { exposer_.reset(); }

WorkerObserver* Metrics::ObserverFor(const std::string& model) {
  absl::MutexLock lock(&observers_mu_);
  auto& observer = observers_[model];
  if (observer == nullptr) observer = std::make_unique<StepObserver>(*this, model);
  return observer.get();
}

void Metrics::RecordCall(const std::string& method, const std::string& model, grpc::StatusCode code,
                         absl::Duration latency) {
  requests_->Add({{"method", method}, {"model", model}, {"code", StatusCodeName(code)}})
      .Increment();
  request_seconds_->Add({{"method", method}, {"model", model}}, kSecondsBuckets)
      .Observe(absl::ToDoubleSeconds(latency));
}

void Metrics::RecordJob(const std::string& model, absl::Duration queued, absl::Duration inference,
                        int64_t input_tokens, int64_t output_tokens) {
  queue_seconds_->Add({{"model", model}}, kSecondsBuckets).Observe(absl::ToDoubleSeconds(queued));
  inference_seconds_->Add({{"model", model}}, kSecondsBuckets)
      .Observe(absl::ToDoubleSeconds(inference));
  input_tokens_->Add({{"model", model}}).Increment(static_cast<double>(input_tokens));
  if (output_tokens > 0) {
    generated_tokens_->Add({{"model", model}}).Increment(static_cast<double>(output_tokens));
  }
}

std::string Metrics::Exposition() const {
  std::vector<prometheus::MetricFamily> families = registry_pushed_->Collect();
  std::vector<prometheus::MetricFamily> pulled = pulled_->Collect();
  families.insert(families.end(), pulled.begin(), pulled.end());
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace rosetta::server
