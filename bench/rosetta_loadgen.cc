// rosetta-loadgen: load on a running rosettad. Closed loop (the default): `--concurrency` client
// threads each send their next request as soon as the previous one returns, until `--requests`
// requests (or `--duration` seconds) have been sent. Open loop (`--rate R`): requests are sent at
// R per second on average, at Poisson arrival times fixed by `--seed`, whatever the server's
// progress, as independent callers would send them; `--concurrency` threads carry them and bound
// the calls in flight. Then it reports throughput, latency percentiles and errors by status code.
//
//   rosetta-loadgen --address 127.0.0.1:50051 --method translate --inputs FILE --concurrency 32
//       [--model NAME] [--tokens] [--requests 512 | --duration 30] [--rate R [--seed 1]]
//       [--texts_per_request 1] [--beam_size N] [--max_length N] [--min_length N] [--warmup 16]
//       [--json]
//
// Requests take their inputs from FILE (one text per line; with --tokens, space-separated tokens
// sent as `tokenized`) in order, cycling: request i holds lines i*k .. i*k+k-1 (mod the line count)
// for k = --texts_per_request. The measured requests are numbered from 0 whatever the warm-up, so
// runs with the same --requests send the same requests at every concurrency.
//
// Latency is measured by the client, from just before the call to its return (open loop: from the
// request's scheduled send time, so that a request delayed because every thread was busy counts
// its wait), and only for successful calls: a failed call counts as an error, never as a latency.
// Throughput divides the successful requests (texts, generated tokens) by the time from the first
// call to the last return. Clients are spread over several channels (--clients_per_channel) with
// distinct channel arguments, so that gRPC does not multiplex them all over one connection.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/channel_credentials.h"
#include "nlohmann/json.hpp"
#include "proto/status_names.h"
#include "rosetta/v1/rosetta.grpc.pb.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "rosettad's HOST:PORT.");
ABSL_FLAG(std::string, model, "", "Model name; empty: the server's default model.");
ABSL_FLAG(std::string, method, "translate", "translate or encode.");
ABSL_FLAG(std::string, inputs, "", "File with one input per line (empty lines are skipped).");
ABSL_FLAG(bool, tokens, false, "Inputs are space-separated tokens, sent as `tokenized`.");
ABSL_FLAG(int, concurrency, 1, "Clients in the closed loop (one thread each).");
ABSL_FLAG(int64_t, requests, 256, "Measured requests in all (ignored when --duration is set).");
ABSL_FLAG(double, duration, 0, "If > 0, send requests for this many seconds instead.");
ABSL_FLAG(double, rate, 0,
          "If > 0, open loop: send --requests requests at this many per second on average "
          "(Poisson arrivals); --concurrency threads carry them.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the open loop's arrival times.");
ABSL_FLAG(int, texts_per_request, 1, "Inputs per request.");
ABSL_FLAG(int, beam_size, 0, "TranslateOptions.beam_size; 0 leaves it unset (model default).");
ABSL_FLAG(int, max_length, 0, "TranslateOptions.max_length; 0 leaves it unset.");
ABSL_FLAG(int, min_length, 0, "TranslateOptions.min_length; 0 leaves it unset.");
ABSL_FLAG(bool, normalize, false, "EncodeRequest.normalize.");
ABSL_FLAG(int, warmup, 0, "Requests sent (at --concurrency) before measuring; not reported.");
ABSL_FLAG(int, deadline_ms, 0, "Per-call deadline in ms; 0: none.");
ABSL_FLAG(int, clients_per_channel, 8, "Clients sharing one channel (connection).");
ABSL_FLAG(bool, model_stats, true,
          "Read the model's ModelStats (GetModel) before and after and report the differences.");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of text.");
ABSL_FLAG(bool, tls, false, "Connect with TLS (implied by the other --tls_ flags).");
ABSL_FLAG(std::string, tls_ca_file, "", "PEM CA certificates the server's must chain to.");
ABSL_FLAG(std::string, tls_cert_file, "", "PEM client certificate (mutual TLS).");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, tls_server_name, "", "Name the server's certificate must carry.");
ABSL_FLAG(std::string, api_key_file, "",
          "File whose first line is the API key to send (default: $ROSETTA_API_KEY).");

namespace rosetta::loadgen {
namespace {

using Clock = std::chrono::steady_clock;

enum class Method { kTranslate, kEncode };

struct LoadOptions {
  std::string model;
  Method method = Method::kTranslate;
  bool tokens = false;          // inputs are space-separated tokens
  int concurrency = 1;          // closed-loop clients
  int64_t requests = 256;       // measured requests, when duration_seconds == 0
  double duration_seconds = 0;  // > 0: send for this long instead
  double rate = 0;              // > 0: open loop, requests per second
  uint64_t seed = 1;            // of the open loop's arrival times
  int texts_per_request = 1;    // inputs per request
  int beam_size = 0;            // 0: unset
  int max_length = 0;           // 0: unset
  int min_length = 0;           // 0: unset
  bool normalize = false;       // Encode only
  int deadline_ms = 0;          // 0: no deadline
  int clients_per_channel = 8;  // clients sharing one channel
  std::string api_key;          // sent with every call when not empty
};

// Nearest-rank percentile: the smallest value such that at least p% of the values are <= it.
// REQUIRES: `sorted` is sorted ascending and not empty; 0 < p <= 100.
double NearestRank(const std::vector<double>& sorted, double p) {
  const double rank = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t index = static_cast<size_t>(std::max(rank, 1.0)) - 1;
  return sorted[std::min(index, sorted.size() - 1)];
}

struct LatencySummary {
  double p50 = 0, p95 = 0, p99 = 0, max = 0, mean = 0;  // seconds
};

LatencySummary Summarize(std::vector<double> values) {
  LatencySummary summary;
  if (values.empty()) return summary;
  std::sort(values.begin(), values.end());
  summary.p50 = NearestRank(values, 50);
  summary.p95 = NearestRank(values, 95);
  summary.p99 = NearestRank(values, 99);
  summary.max = values.back();
  double sum = 0;
  for (double v : values) sum += v;
  summary.mean = sum / static_cast<double>(values.size());
  return summary;
}

// What one client (or, merged, all of them) saw.
struct Tally {
  std::vector<double> latencies_seconds;  // successful calls only
  int64_t texts = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double queue_seconds = 0;  // sum of the server's Timings over successful calls
  double inference_seconds = 0;
  double max_send_lag_seconds = 0;        // open loop: the latest a request went out after its time
  std::map<std::string, int64_t> errors;  // status code name -> calls
  std::map<std::string, std::string> error_examples;  // status code name -> first message

  void AddError(const std::string& code, const std::string& message) {
    ++errors[code];
    error_examples.emplace(code, message);
  }

  void Merge(const Tally& other) {
    latencies_seconds.insert(latencies_seconds.end(), other.latencies_seconds.begin(),
                             other.latencies_seconds.end());
    texts += other.texts;
    input_tokens += other.input_tokens;
    output_tokens += other.output_tokens;
    queue_seconds += other.queue_seconds;
    inference_seconds += other.inference_seconds;
    max_send_lag_seconds = std::max(max_send_lag_seconds, other.max_send_lag_seconds);
    for (const auto& [code, count] : other.errors) errors[code] += count;
    for (const auto& [code, message] : other.error_examples) error_examples.emplace(code, message);
  }
};

// Builds request `index` from the input lines. Thread-safe (read-only after construction).
class RequestSource {
 public:
  RequestSource(std::vector<std::string> lines, const LoadOptions& options)
      : lines_(std::move(lines)), options_(options) {}

  void Fill(int64_t index, v1::TranslateRequest* request) const {
    request->set_model(options_.model);
    AddInputs(index, request->mutable_texts(), request->mutable_tokenized());
    v1::TranslateOptions* decoding = request->mutable_options();
    if (options_.beam_size > 0) decoding->set_beam_size(options_.beam_size);
    if (options_.max_length > 0) decoding->set_max_length(options_.max_length);
    if (options_.min_length > 0) decoding->set_min_length(options_.min_length);
  }

  void Fill(int64_t index, v1::EncodeRequest* request) const {
    request->set_model(options_.model);
    request->set_normalize(options_.normalize);
    AddInputs(index, request->mutable_texts(), request->mutable_tokenized());
  }

 private:
  void AddInputs(int64_t index, google::protobuf::RepeatedPtrField<std::string>* texts,
                 google::protobuf::RepeatedPtrField<v1::TokenList>* tokenized) const {
    const int64_t count = static_cast<int64_t>(lines_.size());
    for (int j = 0; j < options_.texts_per_request; ++j) {
      const std::string& line = lines_[(index * options_.texts_per_request + j) % count];
      if (options_.tokens) {
        v1::TokenList* list = tokenized->Add();
        for (absl::string_view token : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
          list->add_tokens(std::string(token));
        }
      } else {
        texts->Add()->assign(line);
      }
    }
  }

  const std::vector<std::string> lines_;
  const LoadOptions options_;
};

// Sends the load. One thread per client, each with a blocking stub on its channel: the clients
// are idle in the call almost all the time, so threads cost little next to the server's work.
class LoadGenerator {
 public:
  LoadGenerator(std::vector<std::shared_ptr<grpc::Channel>> channels, const RequestSource& source,
                const LoadOptions& options)
      : channels_(std::move(channels)), source_(source), options_(options) {}

  struct Phase {
    int64_t requests = 0;  // requests to send, when seconds == 0
    double seconds = 0;    // > 0: send until this much time has passed
    // Open loop: request i is due this long after the start (one entry per request); empty:
    // closed loop.
    std::vector<Clock::duration> schedule;
  };

  struct PhaseResult {
    Tally tally;
    int64_t sent = 0;
    double elapsed_seconds = 0;  // first call to last return
  };

  PhaseResult Run(const Phase& phase) const {
    std::atomic<int64_t> next{0};
    std::vector<Tally> tallies(options_.concurrency);
    std::vector<std::thread> clients;
    const Clock::time_point start = Clock::now();
    const Clock::time_point stop = start + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(phase.seconds));
    for (int c = 0; c < options_.concurrency; ++c) {
      clients.emplace_back([&, c] {
        auto stub = v1::Rosetta::NewStub(channels_[c / options_.clients_per_channel]);
        for (;;) {
          if (phase.seconds > 0 ? Clock::now() >= stop : next.load() >= phase.requests) break;
          const int64_t index = next.fetch_add(1);
          if (phase.seconds <= 0 && index >= phase.requests) break;
          if (phase.schedule.empty()) {
            Call(*stub, index, std::nullopt, &tallies[c]);
          } else {
            const Clock::time_point due = start + phase.schedule[index];
            std::this_thread::sleep_until(due);
            // Later than due when every thread was busy: the request waited for one.
            tallies[c].max_send_lag_seconds =
                std::max(tallies[c].max_send_lag_seconds,
                         std::chrono::duration<double>(Clock::now() - due).count());
            Call(*stub, index, due, &tallies[c]);
          }
        }
      });
    }
    for (std::thread& client : clients) client.join();
    PhaseResult result;
    result.elapsed_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.sent = phase.seconds > 0 ? next.load() : std::min(next.load(), phase.requests);
    for (const Tally& tally : tallies) result.tally.Merge(tally);
    return result;
  }

 private:
  // The deadline counts from `start` (open loop: the scheduled send time, which may be past).
  // Adds the API key.
  void SetDeadline(grpc::ClientContext* context, Clock::time_point start) const {
    if (!options_.api_key.empty()) {
      context->AddMetadata(client::kApiKeyMetadata, client::ApiKeyMetadataValue(options_.api_key));
    }
    if (options_.deadline_ms > 0) {
      context->set_deadline(
          std::chrono::system_clock::now() +
          std::chrono::duration_cast<std::chrono::system_clock::duration>(start - Clock::now()) +
          std::chrono::milliseconds(options_.deadline_ms));
    }
  }

  // Latency runs from `due` (open loop: the scheduled send time), or else from the call's start.
  void Call(v1::Rosetta::Stub& stub, int64_t index, std::optional<Clock::time_point> due,
            Tally* tally) const {
    grpc::ClientContext context;
    SetDeadline(&context, due.value_or(Clock::now()));
    if (options_.method == Method::kTranslate) {
      v1::TranslateRequest request;
      v1::TranslateResponse response;
      source_.Fill(index, &request);
      const Clock::time_point start = due.value_or(Clock::now());
      const grpc::Status status = stub.Translate(&context, request, &response);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (!status.ok()) {
        tally->AddError(StatusCodeName(status.error_code()), status.error_message());
        return;
      }
      if (response.translations_size() != options_.texts_per_request) {
        tally->AddError("WRONG_RESPONSE",
                        absl::StrFormat("%d translations for %d inputs",
                                        response.translations_size(), options_.texts_per_request));
        return;
      }
      tally->latencies_seconds.push_back(seconds);
      tally->texts += response.translations_size();
      for (const v1::Translation& translation : response.translations()) {
        tally->input_tokens += translation.input_tokens();
        tally->output_tokens += translation.output_tokens();
      }
      tally->queue_seconds += response.timings().queue_seconds();
      tally->inference_seconds += response.timings().inference_seconds();
    } else {
      v1::EncodeRequest request;
      v1::EncodeResponse response;
      source_.Fill(index, &request);
      const Clock::time_point start = due.value_or(Clock::now());
      const grpc::Status status = stub.Encode(&context, request, &response);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (!status.ok()) {
        tally->AddError(StatusCodeName(status.error_code()), status.error_message());
        return;
      }
      if (response.embeddings_size() != options_.texts_per_request) {
        tally->AddError("WRONG_RESPONSE",
                        absl::StrFormat("%d embeddings for %d inputs", response.embeddings_size(),
                                        options_.texts_per_request));
        return;
      }
      tally->latencies_seconds.push_back(seconds);
      tally->texts += response.embeddings_size();
      for (const v1::Embedding& embedding : response.embeddings()) {
        tally->input_tokens += embedding.tokens();
      }
      tally->queue_seconds += response.timings().queue_seconds();
      tally->inference_seconds += response.timings().inference_seconds();
    }
  }

  const std::vector<std::shared_ptr<grpc::Channel>> channels_;
  const RequestSource& source_;
  const LoadOptions options_;
};

absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> OpenChannels(const std::string& address,
                                                                         int count) {
  const client::ChannelSecurity security = {.tls = absl::GetFlag(FLAGS_tls),
                                            .ca_file = absl::GetFlag(FLAGS_tls_ca_file),
                                            .cert_file = absl::GetFlag(FLAGS_tls_cert_file),
                                            .key_file = absl::GetFlag(FLAGS_tls_key_file),
                                            .server_name = absl::GetFlag(FLAGS_tls_server_name)};
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    // Channels with equal arguments may share one connection (a global subchannel pool).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("rosetta.loadgen.channel", i);
    args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        client::ChannelCredentials(security, &args);
    if (!credentials.ok()) return credentials.status();
    channels.push_back(grpc::CreateCustomChannel(address, *credentials, args));
  }
  return channels;
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

std::optional<v1::ModelInfo> GetModel(const std::shared_ptr<grpc::Channel>& channel,
                                      const std::string& model, const std::string& api_key) {
  auto stub = v1::Rosetta::NewStub(channel);
  grpc::ClientContext context;
  if (!api_key.empty()) {
    context.AddMetadata(client::kApiKeyMetadata, client::ApiKeyMetadataValue(api_key));
  }
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetModelRequest request;
  request.set_name(model);
  v1::ModelInfo info;
  if (!stub->GetModel(&context, request, &info).ok()) return std::nullopt;
  return info;
}

// Differences of the engine's counters over the measured phase.
nlohmann::json StatsDelta(const v1::ModelStats& before, const v1::ModelStats& after) {
  nlohmann::json delta;
  const int64_t steps = after.decoding_steps() - before.decoding_steps();
  const int64_t rows = after.decoded_rows() - before.decoded_rows();
  const int64_t batches = after.encode_batches() - before.encode_batches();
  const int64_t encoded = after.encoded_texts() - before.encoded_texts();
  delta["requests"] = after.requests() - before.requests();
  delta["sentences"] = after.sentences() - before.sentences();
  delta["decoding_steps"] = steps;
  delta["decoded_rows"] = rows;
  delta["rows_per_step"] = steps > 0 ? static_cast<double>(rows) / steps : 0.0;
  delta["encode_batches"] = batches;
  delta["encoded_texts"] = encoded;
  delta["texts_per_encode_batch"] = batches > 0 ? static_cast<double>(encoded) / batches : 0.0;
  delta["max_batch_sequences"] = after.max_batch_sequences();
  delta["max_batch_rows"] = after.max_batch_rows();
  delta["max_encode_batch"] = after.max_encode_batch();
  delta["rejected_queue_full"] = after.rejected_queue_full() - before.rejected_queue_full();
  delta["cancelled"] = after.cancelled() - before.cancelled();
  delta["deadline_exceeded"] = after.deadline_exceeded() - before.deadline_exceeded();
  return delta;
}

// Send times of an open loop: exponential gaps of mean 1/rate seconds, the first at 0.
std::vector<Clock::duration> PoissonSchedule(int64_t requests, double rate, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::exponential_distribution<double> gap(rate);
  std::vector<Clock::duration> schedule;
  schedule.reserve(requests);
  double seconds = 0;
  for (int64_t i = 0; i < requests; ++i) {
    schedule.push_back(
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
    seconds += gap(random);
  }
  return schedule;
}

std::vector<std::string> ReadLines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

int Run() {
  LoadOptions options;
  options.model = absl::GetFlag(FLAGS_model);
  const std::string method = absl::GetFlag(FLAGS_method);
  if (method == "translate") {
    options.method = Method::kTranslate;
  } else if (method == "encode") {
    options.method = Method::kEncode;
  } else {
    std::cerr << "rosetta-loadgen: --method must be translate or encode\n";
    return 2;
  }
  options.tokens = absl::GetFlag(FLAGS_tokens);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.duration_seconds = absl::GetFlag(FLAGS_duration);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.texts_per_request = absl::GetFlag(FLAGS_texts_per_request);
  options.beam_size = absl::GetFlag(FLAGS_beam_size);
  options.max_length = absl::GetFlag(FLAGS_max_length);
  options.min_length = absl::GetFlag(FLAGS_min_length);
  options.normalize = absl::GetFlag(FLAGS_normalize);
  options.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  options.clients_per_channel = absl::GetFlag(FLAGS_clients_per_channel);
  if (const std::string file = absl::GetFlag(FLAGS_api_key_file); !file.empty()) {
    absl::StatusOr<std::string> key = client::ReadApiKey(file);
    if (!key.ok()) {
      std::cerr << "rosetta-loadgen: " << key.status().message() << "\n";
      return 2;
    }
    options.api_key = *key;
  } else if (const char* value = std::getenv("ROSETTA_API_KEY"); value != nullptr) {
    absl::StatusOr<std::string> key = client::ApiKeyFrom(value, "ROSETTA_API_KEY");
    if (!key.ok()) {
      std::cerr << "rosetta-loadgen: " << key.status().message() << "\n";
      return 2;
    }
    options.api_key = *key;
  }
  if (options.concurrency < 1 || options.texts_per_request < 1 || options.clients_per_channel < 1 ||
      (options.duration_seconds <= 0 && options.requests < 1)) {
    std::cerr << "rosetta-loadgen: --concurrency, --texts_per_request, --clients_per_channel and "
                 "--requests (or --duration) must be positive\n";
    return 2;
  }
  if (options.rate < 0 || (options.rate > 0 && options.duration_seconds > 0)) {
    std::cerr << "rosetta-loadgen: --rate must be positive and goes with --requests, not "
                 "--duration\n";
    return 2;
  }
  std::vector<std::string> lines = ReadLines(absl::GetFlag(FLAGS_inputs));
  if (lines.empty()) {
    std::cerr << "rosetta-loadgen: no inputs in --inputs '" << absl::GetFlag(FLAGS_inputs) << "'\n";
    return 2;
  }
  const size_t input_count = lines.size();
  const RequestSource source(std::move(lines), options);

  const std::string address = absl::GetFlag(FLAGS_address);
  const int channel_count =
      (options.concurrency + options.clients_per_channel - 1) / options.clients_per_channel;
  absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> opened =
      OpenChannels(address, channel_count);
  if (!opened.ok()) {
    std::cerr << "rosetta-loadgen: " << opened.status().message() << "\n";
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels = std::move(*opened);
  for (const auto& channel : channels) {
    if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      std::cerr << "rosetta-loadgen: cannot connect to " << address << "\n";
      return 1;
    }
  }
  const LoadGenerator generator(channels, source, options);

  const int warmup = absl::GetFlag(FLAGS_warmup);
  if (warmup > 0) {
    LoadGenerator::Phase warm;  // closed loop
    warm.requests = warmup;
    const LoadGenerator::PhaseResult result = generator.Run(warm);
    if (result.tally.latencies_seconds.empty()) {
      std::cerr << "rosetta-loadgen: every warm-up request failed";
      for (const auto& [code, message] : result.tally.error_examples) {
        std::cerr << "; " << code << ": " << message;
      }
      std::cerr << "\n";
      return 1;
    }
  }

  const bool model_stats = absl::GetFlag(FLAGS_model_stats);
  std::optional<v1::ModelInfo> before;
  if (model_stats) before = GetModel(channels[0], options.model, options.api_key);
  const double cpu_start = CpuSeconds();
  LoadGenerator::Phase measured;
  measured.requests = options.requests;
  measured.seconds = options.duration_seconds;
  if (options.rate > 0) {
    measured.schedule = PoissonSchedule(options.requests, options.rate, options.seed);
  }
  const LoadGenerator::PhaseResult result = generator.Run(measured);
  const double cpu_seconds = CpuSeconds() - cpu_start;
  std::optional<v1::ModelInfo> after;
  if (before) after = GetModel(channels[0], options.model, options.api_key);

  const Tally& tally = result.tally;
  const int64_t ok = static_cast<int64_t>(tally.latencies_seconds.size());
  int64_t failed = 0;
  for (const auto& [code, count] : tally.errors) failed += count;
  const LatencySummary latency = Summarize(tally.latencies_seconds);
  const double elapsed = result.elapsed_seconds;
  nlohmann::json report;
  report["address"] = address;
  report["model"] = options.model;
  report["method"] = method;
  report["concurrency"] = options.concurrency;
  report["rate"] = options.rate;  // 0: closed loop
  report["seed"] = options.seed;
  // Open loop: when the last request was due, and the most any went out late (threads all busy;
  // their latency still counts from their due time).
  report["schedule_seconds"] =
      measured.schedule.empty() ? 0.0
                                : std::chrono::duration<double>(measured.schedule.back()).count();
  report["max_send_lag_ms"] = 1e3 * tally.max_send_lag_seconds;
  report["channels"] = channel_count;
  report["texts_per_request"] = options.texts_per_request;
  report["beam_size"] = options.beam_size;
  report["max_length"] = options.max_length;
  report["min_length"] = options.min_length;
  report["inputs"] = input_count;
  report["warmup"] = warmup;
  report["requests"] = result.sent;
  report["ok"] = ok;
  report["failed"] = failed;
  report["errors"] = tally.errors;
  report["error_examples"] = tally.error_examples;
  report["seconds"] = elapsed;
  report["requests_per_second"] = ok / elapsed;
  report["texts_per_second"] = tally.texts / elapsed;
  report["input_tokens_per_second"] = tally.input_tokens / elapsed;
  report["output_tokens_per_second"] = tally.output_tokens / elapsed;
  report["output_tokens_per_text"] =
      tally.texts > 0 ? static_cast<double>(tally.output_tokens) / tally.texts : 0.0;
  report["input_tokens_per_text"] =
      tally.texts > 0 ? static_cast<double>(tally.input_tokens) / tally.texts : 0.0;
  report["latency_ms"] = {{"p50", 1e3 * latency.p50},
                          {"p95", 1e3 * latency.p95},
                          {"p99", 1e3 * latency.p99},
                          {"max", 1e3 * latency.max},
                          {"mean", 1e3 * latency.mean}};
  report["server_queue_ms_mean"] = ok > 0 ? 1e3 * tally.queue_seconds / ok : 0.0;
  report["server_inference_ms_mean"] = ok > 0 ? 1e3 * tally.inference_seconds / ok : 0.0;
  report["client_cpu_seconds"] = cpu_seconds;
  if (before && after) {
    report["batching"] = after->batching();
    report["engine"] = StatsDelta(before->stats(), after->stats());
  }

  if (absl::GetFlag(FLAGS_json)) {
    std::cout << report.dump() << std::endl;
  } else {
    std::cout << absl::StrFormat(
        "%s, %d clients on %d channels%s: %d requests, %d ok, %d failed in %.2f s\n"
        "throughput: %.2f requests/s, %.2f texts/s, %.1f generated tokens/s\n"
        "latency ms: p50 %.1f  p95 %.1f  p99 %.1f  max %.1f  mean %.1f\n"
        "server timings ms (mean): queue %.1f, inference %.1f; client CPU %.2f s\n",
        method, options.concurrency, channel_count,
        options.rate > 0 ? absl::StrFormat(", open loop at %.2f requests/s", options.rate) : "",
        result.sent, ok, failed, elapsed, ok / elapsed, tally.texts / elapsed,
        tally.output_tokens / elapsed, 1e3 * latency.p50, 1e3 * latency.p95, 1e3 * latency.p99,
        1e3 * latency.max, 1e3 * latency.mean, report["server_queue_ms_mean"].get<double>(),
        report["server_inference_ms_mean"].get<double>(), cpu_seconds);
    for (const auto& [code, count] : tally.errors) {
      std::cout << absl::StrFormat("errors %s: %d (%s)\n", code, count,
                                   tally.error_examples.at(code));
    }
    if (report.contains("engine")) std::cout << "engine: " << report["engine"].dump() << "\n";
  }
  return failed > 0 && ok == 0 ? 1 : 0;
}

}  // namespace
}  // namespace rosetta::loadgen

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Load on rosettad: rosetta-loadgen --address HOST:PORT --inputs FILE "
      "--method translate|encode --concurrency N [--rate REQUESTS_PER_SECOND]");
  absl::ParseCommandLine(argc, argv);
  return rosetta::loadgen::Run();
}
