#include "server/server.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/model_loader.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/log.h"
#include "server/tls.h"

namespace rosetta::server {

Server::Server(const DaemonOptions& options)
    : options_(options), service_(options.limits, &metrics_) {}

Server::~Server() {
  if (!drained_ && server_ != nullptr) Drain();
  metrics_.StopServing();
  metrics_.SetRegistry(nullptr);
  metrics_.SetTls(nullptr);
  metrics_.SetApiKeys(nullptr);
}

absl::Status Server::Start() {
  // Before listening or fetching anything: a model could not load anyway.
  if (absl::Status s = CheckLoadOptions({.compute_type = options_.compute_type}); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("--compute_type: ", s.message()));
  }
  for (const auto& [name, type] : options_.model_compute_types) {
    if (absl::Status s = CheckLoadOptions({.compute_type = type}); !s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("--model_compute_type ", name, "=",
                                                        ComputeTypeName(type), ": ", s.message()));
    }
  }
  if (options_.tls.enabled()) {
    absl::StatusOr<std::unique_ptr<TlsCertificates>> tls = TlsCertificates::Start(options_.tls);
    if (!tls.ok()) return tls.status();
    tls_ = std::move(*tls);
    metrics_.SetTls(tls_.get());
    const TlsSummary summary = tls_->summary();
    Log("TLS: certificate ", summary.subject, " issued by ", summary.issuer, " (",
        summary.chain_certificates, " in the chain), valid until ",
        absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", summary.not_after, absl::UTCTimeZone()),
        "; client certificates ",
        options_.tls.client_ca_file.empty()
            ? std::string("not requested")
            : absl::StrCat("required (", summary.client_ca_certificates, " CA certificates)"),
        "; files re-read every ", absl::FormatDuration(options_.tls.reload_interval));
    if (summary.not_after < absl::Now()) {
      Log("warning: the TLS certificate in ", options_.tls.cert_file,
          " has expired: clients will refuse it until it is replaced");
    }
  }
  if (!options_.api_keys_file.empty()) {
    absl::StatusOr<std::unique_ptr<ApiKeyFile>> keys =
        ApiKeyFile::Start(options_.api_keys_file, options_.api_keys_reload_interval);
    if (!keys.ok()) return keys.status();
    Log("API keys: ", (*keys)->size(), " from ", options_.api_keys_file,
        "; rosetta.v1.Rosetta needs one (\"authorization: Bearer KEY\"), health and reflection "
        "do not; the file is re-read ",
        options_.api_keys_reload_interval > absl::ZeroDuration()
            ? absl::StrCat("every ", absl::FormatDuration(options_.api_keys_reload_interval))
            : std::string("never"));
    if (!options_.tls.enabled()) {
      Log("warning: API keys without TLS cross the network in plain text (--tls_cert_file)");
    }
    service_.RequireApiKeys(*std::move(keys));
    metrics_.SetApiKeys(service_.api_keys());
  }
  if (!options_.metrics_listen.empty()) {
    if (absl::Status s = metrics_.Serve(options_.metrics_listen); !s.ok()) return s;
    const size_t colon = options_.metrics_listen.rfind(':');
    Log("metrics on http://", options_.metrics_listen.substr(0, colon), ":", metrics_.port(),
        "/metrics");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Reflection describes the health service only when its descriptor is in the pool.
  grpc::health::v1::HealthCheckRequest::descriptor();

  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      options_.listen, tls_ != nullptr ? tls_->credentials() : grpc::InsecureServerCredentials(),
      &port_);
  builder.RegisterService(&service_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  // Responses are not capped (gRPC's default): one is built in full before it is sent, so a cap
  // would only fail a request after its work. The client's own receive limit applies.
  builder.SetMaxSendMessageSize(-1);
  // Streams a single connection may keep open at once: bounds what one client can hold.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 1024);
  if (options_.max_connection_age > absl::ZeroDuration()) {
    // Behind a connection-level balancer (kube-proxy) or with DNS round-robin, clients re-resolve
    // and rebalance only when a connection ends.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(absl::ToInt64Milliseconds(
                                   std::min(options_.max_connection_age, absl::Hours(24 * 20)))));
    if (options_.max_connection_age_grace > absl::ZeroDuration()) {
      builder.AddChannelArgument(
          GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
          static_cast<int>(absl::ToInt64Milliseconds(std::clamp(
              options_.max_connection_age_grace, absl::Milliseconds(1), absl::Hours(24 * 20)))));
    }
  }
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.listen, " (address in use or invalid?)"));
  }
  SetServing(false);
  Log("listening on ", address(), options_.tls.enabled() ? " with TLS" : "",
      " (loading models; health NOT_SERVING)");
  return absl::OkStatus();
}

absl::Status Server::LoadModels(const std::function<bool()>& may_serve) {
  absl::StatusOr<std::unique_ptr<ModelRegistry>> registry =
      ModelRegistry::Load(options_, options_.threads,
                          [this](const std::string& model) { return metrics_.ObserverFor(model); });
  if (!registry.ok()) return registry.status();
  registry_ = std::move(*registry);
  if (may_serve && !may_serve()) return absl::CancelledError("not serving: stopping");
  metrics_.SetRegistry(registry_.get());
  service_.SetRegistry(registry_.get());
  SetServing(true);
  const RequestLimits& l = options_.limits;
  Log("limits per request: ", l.max_texts_per_request, " texts, ", l.max_tokens_per_text,
      " tokens per text, ", l.max_tokens_per_request, " tokens, beam size ", l.max_beam_size,
      "; per model: ", options_.batching.max_queued_texts, " queued texts, batch token budget ",
      options_.batching.batch_token_budget, ", running beams ",
      options_.batching.max_running_sequences > 0
          ? absl::StrCat(options_.batching.max_running_sequences)
          : absl::StrCat("auto (", AutoRunningSequences(options_.threads), ")"),
      ", admission after ", options_.batching.admission_wait_steps, " steps or ",
      options_.batching.admission_tokens, " tokens, encode budget ",
      options_.batching.encode_token_budget, " tokens / ",
      absl::ToDoubleMilliseconds(options_.batching.encode_max_wait), " ms");
  Log("serving on ", address(), options_.tls.enabled() ? " with TLS" : "", " (default model \"",
      registry_->Find("")->name, "\")");
  return absl::OkStatus();
}

void Server::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // every service, "" included
  health->SetServingStatus(kServiceName, serving);
}

int Server::Drain() {
  if (drained_ || server_ == nullptr) return 0;
  drained_ = true;
  // Health first: a client refused for the drain then finds health NOT_SERVING already.
  SetServing(false);
  service_.StartDraining();
  const int in_flight = service_.calls_in_flight();
  Log("draining: health NOT_SERVING, new requests get UNAVAILABLE; ", in_flight,
      " requests in flight, waiting up to ", absl::FormatDuration(options_.drain_timeout));
  const bool all_done = service_.WaitForCalls(absl::Now() + options_.drain_timeout);
  const int left = all_done ? 0 : service_.calls_in_flight();
  if (!all_done) {
    Log("drain timeout: ending ", left, " requests in flight with UNAVAILABLE");
  }
  // Workers end what is left with UNAVAILABLE; then the calls can finish and the server stop.
  if (registry_ != nullptr) registry_->StopWorkers();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  metrics_.StopServing();
  metrics_.SetRegistry(nullptr);
  Log("stopped");
  return left;
}

std::string Server::address() const {
  const size_t colon = options_.listen.rfind(':');
  return absl::StrCat(options_.listen.substr(0, colon), ":", port_);
}

}  // namespace rosetta::server
