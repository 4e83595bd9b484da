// The daemon without main(): a gRPC server with the Rosetta service, the standard health service
// and server reflection, over a registry of models. Tests run it in-process.
//
//   Server server(options);
//   RETURN_IF_ERROR(server.Start());       // listening; health NOT_SERVING (loading)
//   RETURN_IF_ERROR(server.LoadModels());  // health SERVING
//   ...
//   server.Drain();                        // health NOT_SERVING; in-flight calls finish
//
// Start, LoadModels and Drain are called from one thread, in that order.
#ifndef ROSETTA_SERVER_SERVER_H_
#define ROSETTA_SERVER_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"
#include "server/daemon_options.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/rosetta_service.h"
#include "server/tls.h"

namespace rosetta::server {

class Server {
 public:
  // The service name the health service reports besides the overall "".
  static constexpr char kServiceName[] = "rosetta.v1.Rosetta";

  // REQUIRES: options.threads > 0.
  explicit Server(const DaemonOptions& options);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  absl::Status Start();
  // Loads the models and starts serving them. `may_serve`, when set, is asked once the models are
  // loaded and before any call can reach them: false leaves the server NOT_SERVING and returns
  // CANCELLED (the daemon's main thread uses it to exit on a signal without having accepted
  // anything).
  absl::Status LoadModels(const std::function<bool()>& may_serve = nullptr);
  // Stops serving: new calls get UNAVAILABLE at once, calls in flight get up to the drain
  // timeout to finish; what remains then ends with UNAVAILABLE. Returns the calls that were
  // still in flight at the timeout.
  int Drain();

  int port() const { return port_; }
  // The /metrics port, 0 when metrics are off.
  int metrics_port() const { return metrics_.port(); }
  const Metrics& metrics() const { return metrics_; }
  // The listening address with the real port ("127.0.0.1:43121").
  std::string address() const;
  const ModelRegistry* registry() const { return registry_.get(); }

 private:
  void SetServing(bool serving);

  const DaemonOptions options_;
  Metrics metrics_;  // outlives the workers, which report to it
  RosettaService service_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<TlsCertificates> tls_;  // outlives server_, which reads its files
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool drained_ = false;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_SERVER_H_
