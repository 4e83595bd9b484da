// Prometheus metrics of the daemon (prometheus-cpp), served on their own port at /metrics.
//
// Pushed where they happen: requests by method, model and status code with their latency, time
// queued and in the engine, tokens, and the worker's batch figures (through WorkerObserver).
// Pulled at scrape time from the workers' counters: running and waiting sequences, queue capacity,
// KV cache use, rejections, cancellations and deadline expiries; plus model info and load time,
// and the process's CPU time and resident memory; with TLS, the certificate's expiry and updates;
// with API keys, theirs. Labels are low-cardinality: method, model (only loaded models' names),
// code, reason. Thread-safe.
#ifndef ROSETTA_SERVER_METRICS_H_
#define ROSETTA_SERVER_METRICS_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/api_key_file.h"
#include "server/model_registry.h"
#include "server/model_worker.h"
#include "server/tls.h"

namespace prometheus {
class Exposer;
}

namespace rosetta::server {

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Serves /metrics on `listen` (host:port; port 0 picks one). Fails when it cannot bind.
  absl::Status Serve(const std::string& listen);
  // Stops serving /metrics (waits for a scrape in progress).
  void StopServing();
  int port() const { return port_; }

  // Pulled metrics come from these models from now on. REQUIRES: outlives this object's scrapes.
  void SetRegistry(const ModelRegistry* registry) { registry_.store(registry); }
  // Pulled TLS metrics (certificate expiry, updates) come from `tls` from now on; null: none.
  // REQUIRES: outlives this object's scrapes.
  void SetTls(const TlsCertificates* tls) { tls_.store(tls); }
  // Likewise the API keys file's metrics; null: none. REQUIRES: outlives this object's scrapes.
  void SetApiKeys(const ApiKeyFile* keys) { api_keys_.store(keys); }
  // The observer that records the batches of `model`'s worker; owned by this object.
  WorkerObserver* ObserverFor(const std::string& model);

  // A finished call. `model` is empty when the call named no loaded model.
  void RecordCall(const std::string& method, const std::string& model, grpc::StatusCode code,
                  absl::Duration latency);
  // A finished job of a loaded model.
  void RecordJob(const std::string& model, absl::Duration queued, absl::Duration inference,
                 int64_t input_tokens, int64_t output_tokens);

  // The exposition text, as a scrape would see it.
  std::string Exposition() const;

 private:
  class StepObserver;
  class PulledMetrics;

  std::shared_ptr<prometheus::Registry> registry_pushed_;
  std::shared_ptr<PulledMetrics> pulled_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
  std::atomic<const ModelRegistry*> registry_{nullptr};
  std::atomic<const TlsCertificates*> tls_{nullptr};
  std::atomic<const ApiKeyFile*> api_keys_{nullptr};

  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* request_seconds_;
  prometheus::Family<prometheus::Histogram>* queue_seconds_;
  prometheus::Family<prometheus::Histogram>* inference_seconds_;
  prometheus::Family<prometheus::Counter>* input_tokens_;
  prometheus::Family<prometheus::Counter>* generated_tokens_;
  prometheus::Family<prometheus::Histogram>* batch_sequences_;
  prometheus::Family<prometheus::Histogram>* batch_rows_;
  prometheus::Family<prometheus::Histogram>* admitted_tokens_;
  prometheus::Family<prometheus::Histogram>* encode_batch_texts_;

  absl::Mutex observers_mu_;
  std::map<std::string, std::unique_ptr<StepObserver>> observers_ ABSL_GUARDED_BY(observers_mu_);
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_METRICS_H_
