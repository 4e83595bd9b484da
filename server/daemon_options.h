// rosettad's configuration: command-line flags and an optional config file, turned into one
// options struct that main() hands to the server.
#ifndef ROSETTA_SERVER_DAEMON_OPTIONS_H_
#define ROSETTA_SERVER_DAEMON_OPTIONS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hub/hub_model.h"
#include "server/model_worker.h"
#include "server/tls_files.h"

namespace rosetta::server {

// Limits of one request, checked before it reaches a model's queue.
struct RequestLimits {
  int max_texts_per_request = 128;
  int max_tokens_per_text = 512;  // further capped by each model's positions
  int max_tokens_per_request = 16384;
  int max_beam_size = 16;
};

struct ModelSpec {
  std::string name;
  std::string path;
};

struct DaemonOptions {
  std::string listen = "0.0.0.0:50051";         // host:port; port 0 picks a free port
  std::string metrics_listen = "0.0.0.0:9400";  // Prometheus /metrics; empty: none
  TlsOptions tls;                               // TLS on `listen`; plaintext when no certificate
  std::string api_keys_file;  // set: the Rosetta service needs one of its keys (see ApiKeys)
  absl::Duration api_keys_reload_interval = absl::Seconds(60);  // zero: read at start-up only
  // The first is the default model. A path that is not a directory but a Hub id
  // ("org/name[@revision]") is fetched into the Hugging Face cache.
  std::vector<ModelSpec> models;
  hub::HubOptions hub;     // where and how Hub models are fetched (main() fills it)
  std::string models_dir;  // every model directory inside is served, by its name
  int threads = 0;         // engine threads per model; 0: the CPUs available
  ComputeType compute_type = ComputeType::kFloat32;  // how every model's linear layers multiply
  // Per model name, a compute type that replaces `compute_type` for that model.
  std::map<std::string, ComputeType> model_compute_types;
  BatchingOptions batching;
  RequestLimits limits;
  absl::Duration drain_timeout = absl::Seconds(30);  // SIGTERM: time for requests in flight
  int max_message_bytes = 4 << 20;                   // largest request on the wire (gRPC's default)
  // Connections older than this (at least 1 s) get a GOAWAY, so that clients reconnect (and find
  // new replicas); zero: never. Calls in flight then get max_connection_age_grace before the
  // connection closes; zero: as long as they take.
  absl::Duration max_connection_age = absl::ZeroDuration();
  absl::Duration max_connection_age_grace = absl::ZeroDuration();
};

// Parses flags (argv[0] is skipped). `--config FILE` reads more flags from FILE, one per line
// as `name = value` or `--name=value`, `#` comments; later flags override earlier ones and
// --model accumulates. --help is reported as a NOT_FOUND status carrying the usage text.
absl::StatusOr<DaemonOptions> ParseDaemonOptions(int argc, const char* const* argv);

// The usage text listing every flag with its default.
std::string DaemonUsage();

// How model `name` computes: its --model_compute_type, else --compute_type.
ComputeType ComputeTypeFor(const DaemonOptions& options, const std::string& name);

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_DAEMON_OPTIONS_H_
