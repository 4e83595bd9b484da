// The rosetta.v1.Rosetta gRPC service over the models' engine workers (callback API). Each
// handler: resolve the model -> validate and tokenize -> submit to the worker -> answer from the
// worker's callbacks. Deadlines and client cancellation reach the worker, which removes the work
// from its queue or running batch.
//
// Lifecycle: loading (every call UNAVAILABLE) -> serving (after SetRegistry) -> draining (after
// StartDraining: new calls UNAVAILABLE, calls in flight go on). Thread-safe.
#ifndef ROSETTA_SERVER_ROSETTA_SERVICE_H_
#define ROSETTA_SERVER_ROSETTA_SERVICE_H_

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "rosetta/v1/rosetta.grpc.pb.h"
#include "server/api_key_file.h"
#include "server/daemon_options.h"
#include "server/metrics.h"
#include "server/model_registry.h"

namespace rosetta::server {

// absl::Status to grpc::Status (the codes are the same numbers); long messages are cut.
grpc::Status ToGrpcStatus(const absl::Status& status);

// The methods are "raw" (wire bytes in and out) so that the service parses requests itself: a
// malformed message then gets INVALID_ARGUMENT with a message instead of gRPC's bare
// UNIMPLEMENTED. Reflection still describes the typed methods.
using RawRosettaService =
    v1::Rosetta::WithRawCallbackMethod_Translate<v1::Rosetta::WithRawCallbackMethod_TranslateStream<
        v1::Rosetta::WithRawCallbackMethod_Encode<v1::Rosetta::WithRawCallbackMethod_ListModels<
            v1::Rosetta::WithRawCallbackMethod_GetModel<v1::Rosetta::Service>>>>>;

class RosettaService final : public RawRosettaService {
 public:
  // `metrics`, when not null, must outlive the service.
  RosettaService(const RequestLimits& limits, Metrics* metrics)
      : limits_(limits), metrics_(metrics) {}

  // From now on every call must carry one of `keys` (see ApiKeys). REQUIRES: before the server
  // starts.
  void RequireApiKeys(std::unique_ptr<ApiKeyFile> keys) { api_keys_ = std::move(keys); }
  // The keys required, null when none.
  const ApiKeyFile* api_keys() const { return api_keys_.get(); }
  // Starts serving the registry's models. REQUIRES: `registry` outlives every call.
  void SetRegistry(const ModelRegistry* registry) { registry_.store(registry); }
  // New calls get UNAVAILABLE from now on.
  void StartDraining() { draining_.store(true); }
  // Waits until no call is in flight or `deadline` passes; true when none is left.
  bool WaitForCalls(absl::Time deadline);
  int calls_in_flight() const;

  grpc::ServerUnaryReactor* Translate(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* TranslateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Encode(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;

  // Reactors report their start and end here (drain accounting).
  void CallStarted();
  void CallEnded();
  // Metrics: a call answered (`model` empty when it named no loaded model), a job finished.
  void CallFinished(const char* method, const std::string& model, grpc::StatusCode code,
                    absl::Time start);
  void JobFinished(const std::string& model, const JobTimes& times, int64_t input_tokens,
                   int64_t output_tokens);

 private:
  // OK when no keys are required or the call carries one of them; UNAUTHENTICATED otherwise.
  absl::Status Authenticate(const grpc::CallbackServerContext& context) const;
  // The model a call may use now, or why not (UNAVAILABLE, NOT_FOUND).
  absl::StatusOr<const ServedModel*> Resolve(const std::string& name) const;

  const RequestLimits limits_;
  Metrics* const metrics_;
  std::atomic<const ModelRegistry*> registry_{nullptr};
  std::unique_ptr<ApiKeyFile> api_keys_;  // set before serving, then only read
  std::atomic<bool> draining_{false};
  mutable absl::Mutex calls_mu_;
  int calls_ ABSL_GUARDED_BY(calls_mu_) = 0;
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_ROSETTA_SERVICE_H_
