#include "server/rosetta_service.h"

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/requests.h"

namespace rosetta::server {

namespace {

constexpr size_t kMaxStatusMessage = 1024;
// Unread bytes a stream may hold before it is ended with RESOURCE_EXHAUSTED.
constexpr size_t kMaxQueuedStreamBytes = 32 << 20;

// The call's deadline on the worker's monotonic clock.
absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  const absl::Time now = MonotonicNow();
  return now + (absl::FromChrono(deadline) - absl::Now());
}

// Runs a cancellation action when the client cancels (or the deadline passes), also if that
// happened before the action was set.
class CancelHook {
 public:
  void Set(std::function<void()> action) {
    absl::MutexLock lock(&mu_);
    if (cancelled_) {
      action();
    } else {
      action_ = std::move(action);
    }
  }
  void Fire() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (action_) action_();
  }

 private:
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> action_ ABSL_GUARDED_BY(mu_);
};

// Parses a request from its wire bytes; false when they are not a valid message.
bool ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!bytes.Dump(&slices).ok()) return false;
  std::string data;
  for (const grpc::Slice& slice : slices) {
    data.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return message->ParseFromString(data);
}

grpc::ByteBuffer Serialize(const google::protobuf::Message& message) {
  std::string data;
  message.SerializeToString(&data);
  grpc::Slice slice(data);
  return grpc::ByteBuffer(&slice, 1);
}

absl::Status Malformed(const google::protobuf::Message& message) {
  return absl::InvalidArgumentError(absl::StrCat(
      "malformed request: the bytes are not a valid ", message.GetDescriptor()->full_name(),
      " (truncated, wrong field types, or a string field that is not UTF-8)"));
}

// A unary call: owns its request and response messages; the service parses and serializes them
// itself (raw methods) so that a malformed request gets INVALID_ARGUMENT with a message.
template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(RosettaService* service, grpc::ByteBuffer* raw_response, const char* method)
      : service_(service), raw_response_(raw_response), method_(method) {
    service_->CallStarted();
  }
  // The loaded model the call uses (metrics label).
  void set_model(const std::string& model) { model_ = model; }

  bool Parse(const grpc::ByteBuffer& bytes) { return ParseRequest(bytes, &request_); }
  const Request& request() const { return request_; }
  Response* response() { return &response_; }

  UnaryCall* FinishWith(const absl::Status& status) {
    if (status.ok()) *raw_response_ = Serialize(response_);
    const grpc::Status grpc_status = ToGrpcStatus(status);
    service_->CallFinished(method_, model_, grpc_status.error_code(), start_);
    Finish(grpc_status);
    return this;
  }
  void OnCancelDo(std::function<void()> action) { cancel_.Set(std::move(action)); }

  void OnCancel() override { cancel_.Fire(); }
  void OnDone() override {
    service_->CallEnded();
    delete this;
  }

 private:
  RosettaService* const service_;
  grpc::ByteBuffer* const raw_response_;
  const char* const method_;
  const absl::Time start_ = absl::Now();
  std::string model_;
  Request request_;
  Response response_;
  CancelHook cancel_;
};

// Writes messages one at a time in the order given, then finishes with the status given to
// Close(). Messages queued while a write is in progress wait for it. gRPC is called outside the
// lock: Finish may end in OnDone, which deletes this.
class StreamCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit StreamCall(RosettaService* service) : service_(service) { service_->CallStarted(); }
  void set_model(const std::string& model) { model_ = model; }

  bool Parse(const grpc::ByteBuffer& bytes) { return ParseRequest(bytes, &request_); }
  const v1::TranslateRequest& request() const { return request_; }

  void Send(const v1::TranslateStreamResponse& message) {
    grpc::ByteBuffer* start = nullptr;
    bool overflow = false;
    {
      absl::MutexLock lock(&mu_);
      if (broken_ || closed_) return;
      // A partial result that waits behind the one being written is superseded by the next: merge
      // them, so that a slow reader costs one message per input, not one per token.
      if (message.has_partial() && queue_.size() > 1 && last_partial_.has_value() &&
          last_partial_->index() == message.index()) {
        for (const std::string& token : message.partial().new_tokens()) {
          last_partial_->mutable_partial()->add_new_tokens(token);
        }
        last_partial_->mutable_partial()->set_text(message.partial().text());
        queued_bytes_ -= queue_.back().Length();
        queue_.back() = Serialize(*last_partial_);
      } else {
        queue_.push_back(Serialize(message));
        last_partial_.reset();
        if (message.has_partial()) last_partial_ = message;
      }
      queued_bytes_ += queue_.back().Length();
      if (queued_bytes_ > kMaxQueuedStreamBytes) {
        // The client does not read: stop the work and end the call (see Close).
        overflowed_ = broken_ = true;
        overflow = true;
        while (queue_.size() > (writing_ ? 1u : 0u)) {
          queued_bytes_ -= queue_.back().Length();
          queue_.pop_back();
        }
        last_partial_.reset();
      } else if (!writing_) {
        writing_ = true;
        start = &queue_.front();
      }
    }
    if (overflow) cancel_.Fire();
    if (start != nullptr) StartWrite(start);
  }
  void Close(const absl::Status& status) {
    bool finish = false;
    grpc::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      status_ = overflowed_ ? grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                           "the client did not read the stream: its unread "
                                           "messages passed the limit")
                            : ToGrpcStatus(status);
      finish = !writing_;
      final_status = status_;
      // Recorded under the lock: once it is released, a write completing on a gRPC thread may
      // finish the call and delete this.
      service_->CallFinished("TranslateStream", model_, final_status.error_code(), start_);
    }
    if (finish) Finish(final_status);
  }
  StreamCall* CloseWith(const absl::Status& status) {
    Close(status);
    return this;
  }
  void OnCancelDo(std::function<void()> action) { cancel_.Set(std::move(action)); }

  void OnWriteDone(bool ok) override {
    grpc::ByteBuffer* next = nullptr;
    bool finish = false;
    grpc::Status final_status;
    {
      absl::MutexLock lock(&mu_);
      queued_bytes_ -= queue_.front().Length();
      queue_.pop_front();
      if (queue_.size() <= 1) last_partial_.reset();  // the next write takes it: no more merging
      if (!ok) {
        // The client is gone: drop the rest; Close() comes when the worker ends the job.
        broken_ = true;
        queue_.clear();
        queued_bytes_ = 0;
        last_partial_.reset();
      }
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = closed_;
        final_status = status_;
      }
    }
    if (next != nullptr) {
      StartWrite(next);
    } else if (finish) {
      Finish(final_status);
    }
  }
  void OnCancel() override { cancel_.Fire(); }
  void OnDone() override {
    service_->CallEnded();
    delete this;
  }

 private:
  RosettaService* const service_;
  const absl::Time start_ = absl::Now();
  std::string model_;
  CancelHook cancel_;
  absl::Mutex mu_;
  v1::TranslateRequest request_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<v1::TranslateStreamResponse> last_partial_ ABSL_GUARDED_BY(mu_);
  bool overflowed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

void SetTimings(const JobTimes& times, v1::Timings* out) {
  out->set_queue_seconds(absl::ToDoubleSeconds(times.queued()));
  out->set_inference_seconds(absl::ToDoubleSeconds(times.inference()));
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessage) {
    message.resize(kMaxStatusMessage);
    message += "...";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

void RosettaService::CallStarted() {
  absl::MutexLock lock(&calls_mu_);
  ++calls_;
}

void RosettaService::CallEnded() {
  absl::MutexLock lock(&calls_mu_);
  --calls_;
}

void RosettaService::CallFinished(const char* method, const std::string& model,
                                  grpc::StatusCode code, absl::Time start) {
  if (metrics_ != nullptr) metrics_->RecordCall(method, model, code, absl::Now() - start);
}

void RosettaService::JobFinished(const std::string& model, const JobTimes& times,
                                 int64_t input_tokens, int64_t output_tokens) {
  if (metrics_ != nullptr) {
    metrics_->RecordJob(model, times.queued(), times.inference(), input_tokens, output_tokens);
  }
}

int RosettaService::calls_in_flight() const {
  absl::MutexLock lock(&calls_mu_);
  return calls_;
}

bool RosettaService::WaitForCalls(absl::Time deadline) {
  absl::MutexLock lock(&calls_mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(calls_mu_) { return calls_ == 0; };
  return calls_mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

absl::Status RosettaService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (api_keys_ == nullptr) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto [first, last] = metadata.equal_range(ApiKeys::kMetadataKey);
  if (first == last) return api_keys_->Authenticate(std::nullopt);
  if (std::next(first) != last) {
    // Which one counts would depend on their order (a proxy may add its own): neither does.
    return absl::UnauthenticatedError("send one \"authorization\" metadata entry, not several");
  }
  return api_keys_->Authenticate(absl::string_view(first->second.data(), first->second.size()));
}

absl::StatusOr<const ServedModel*> RosettaService::Resolve(const std::string& name) const {
  if (draining_.load()) {
    return absl::UnavailableError("the server is shutting down: retry on another replica");
  }
  const ModelRegistry* registry = registry_.load();
  if (registry == nullptr) {
    return absl::UnavailableError("the server is loading its models: retry shortly");
  }
  const ServedModel* model = registry->Find(name);
  if (model == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("model \"", name, "\" is not loaded; loaded: ", registry->Names()));
  }
  return model;
}

grpc::ServerUnaryReactor* RosettaService::Translate(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* raw_request,
                                                    grpc::ByteBuffer* raw_response) {
  auto* call =
      new UnaryCall<v1::TranslateRequest, v1::TranslateResponse>(this, raw_response, "Translate");
  if (absl::Status s = Authenticate(*context); !s.ok()) return call->FinishWith(s);
  if (!call->Parse(*raw_request)) return call->FinishWith(Malformed(call->request()));
  const v1::TranslateRequest* request = &call->request();
  v1::TranslateResponse* response = call->response();
  absl::StatusOr<const ServedModel*> served = Resolve(request->model());
  if (!served.ok()) return call->FinishWith(served.status());
  const ServedModel& model = **served;
  call->set_model(model.name);
  absl::StatusOr<PreparedTranslation> prepared = PrepareTranslation(*request, model, limits_);
  if (!prepared.ok()) return call->FinishWith(prepared.status());

  response->set_model(model.name);
  int64_t input_tokens = 0;
  for (const auto& source : prepared->sources) {
    response->add_translations()->set_input_tokens(static_cast<int>(source.size()));
    input_tokens += static_cast<int64_t>(source.size());
  }
  response->mutable_usage()->set_input_tokens(input_tokens);

  auto job = std::make_shared<TranslationJob>();
  job->sources = std::move(prepared->sources);
  job->options = prepared->options;
  job->deadline = DeadlineOf(context);
  const TranslationModel* translation_model = model.model.get();
  // The worker calls these on its thread; `response` lives until the call is finished.
  job->on_result = [translation_model, response, scores = prepared->return_scores,
                    tokens = prepared->return_tokens](int index, DecodingBatch::Finished& result) {
    v1::Translation* out = response->mutable_translations(index);
    FillTranslation(*translation_model, result, scores, tokens, out);
    response->mutable_usage()->set_output_tokens(response->usage().output_tokens() + result.steps);
  };
  job->on_done = [this, call, response, name = model.name](const absl::Status& status,
                                                           const JobTimes& times) {
    if (status.ok()) {
      SetTimings(times, response->mutable_timings());
      JobFinished(name, times, response->usage().input_tokens(), response->usage().output_tokens());
    }
    call->FinishWith(status);
  };
  if (absl::Status s = model.worker->Submit(job); !s.ok()) return call->FinishWith(s);
  call->OnCancelDo([worker = model.worker.get(), job] { worker->Cancel(*job); });
  return call;
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* RosettaService::TranslateStream(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw_request) {
  auto* call = new StreamCall(this);
  if (absl::Status s = Authenticate(*context); !s.ok()) return call->CloseWith(s);
  if (!call->Parse(*raw_request)) return call->CloseWith(Malformed(call->request()));
  const v1::TranslateRequest* request = &call->request();
  absl::StatusOr<const ServedModel*> served = Resolve(request->model());
  if (!served.ok()) return call->CloseWith(served.status());
  const ServedModel& model = **served;
  call->set_model(model.name);
  absl::StatusOr<PreparedTranslation> prepared = PrepareTranslation(*request, model, limits_);
  if (!prepared.ok()) return call->CloseWith(prepared.status());

  // Totals, written by the worker thread only.
  auto usage = std::make_shared<v1::Usage>();
  auto input_tokens = std::make_shared<std::vector<int>>();
  for (const auto& source : prepared->sources) {
    input_tokens->push_back(static_cast<int>(source.size()));
    usage->set_input_tokens(usage->input_tokens() + static_cast<int64_t>(source.size()));
  }
  auto job = std::make_shared<TranslationJob>();
  job->sources = std::move(prepared->sources);
  job->options = prepared->options;
  job->deadline = DeadlineOf(context);
  job->stream_tokens = job->sources.size() == 1 && job->options.beam_size == 1;
  const TranslationModel* translation_model = model.model.get();
  const std::string name = model.name;
  job->on_result = [=, scores = prepared->return_scores, tokens = prepared->return_tokens](
                       int index, DecodingBatch::Finished& result) {
    v1::TranslateStreamResponse message;
    message.set_index(index);
    message.set_model(name);
    v1::Translation* out = message.mutable_translation();
    out->set_input_tokens((*input_tokens)[index]);
    FillTranslation(*translation_model, result, scores, tokens, out);
    usage->set_output_tokens(usage->output_tokens() + result.steps);
    call->Send(std::move(message));
  };
  job->on_tokens = [=](int index, const std::vector<int32_t>& ids, int new_count) {
    v1::TranslateStreamResponse message;
    message.set_index(index);
    message.set_model(name);
    v1::PartialTranslation* partial = message.mutable_partial();
    const std::vector<int32_t> fresh(ids.end() - new_count, ids.end());
    for (std::string& token : translation_model->TargetTokens(fresh)) {
      partial->add_new_tokens(std::move(token));
    }
    partial->set_text(translation_model->DecodeText(ids));
    call->Send(std::move(message));
  };
  job->on_done = [this, call, usage, name](const absl::Status& status, const JobTimes& times) {
    if (status.ok()) {
      JobFinished(name, times, usage->input_tokens(), usage->output_tokens());
      v1::TranslateStreamResponse last;
      last.set_index(-1);
      last.set_model(name);
      *last.mutable_usage() = *usage;
      SetTimings(times, last.mutable_timings());
      call->Send(std::move(last));
    }
    call->Close(status);
  };
  if (absl::Status s = model.worker->Submit(job); !s.ok()) return call->CloseWith(s);
  call->OnCancelDo([worker = model.worker.get(), job] { worker->Cancel(*job); });
  return call;
}

grpc::ServerUnaryReactor* RosettaService::Encode(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* raw_request,
                                                 grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::EncodeRequest, v1::EncodeResponse>(this, raw_response, "Encode");
  if (absl::Status s = Authenticate(*context); !s.ok()) return call->FinishWith(s);
  if (!call->Parse(*raw_request)) return call->FinishWith(Malformed(call->request()));
  const v1::EncodeRequest* request = &call->request();
  v1::EncodeResponse* response = call->response();
  absl::StatusOr<const ServedModel*> served = Resolve(request->model());
  if (!served.ok()) return call->FinishWith(served.status());
  const ServedModel& model = **served;
  call->set_model(model.name);
  absl::StatusOr<PreparedEncode> prepared = PrepareEncode(*request, model, limits_);
  if (!prepared.ok()) return call->FinishWith(prepared.status());

  const int dimension = model.embedder->dimension();
  response->set_model(model.name);
  response->set_dimension(dimension);
  int64_t input_tokens = 0;
  for (size_t i = 0; i < prepared->inputs.size(); ++i) {
    v1::Embedding* embedding = response->add_embeddings();
    embedding->set_tokens(static_cast<int>(prepared->inputs[i].size()));
    embedding->set_truncated(prepared->truncated[i]);
    input_tokens += static_cast<int64_t>(prepared->inputs[i].size());
  }
  response->mutable_usage()->set_input_tokens(input_tokens);

  auto job = std::make_shared<EncodeJob>();
  job->inputs = std::move(prepared->inputs);
  job->normalize = prepared->normalize;
  job->deadline = DeadlineOf(context);
  job->on_done = [this, call, response, dimension, name = model.name](
                     const absl::Status& status, std::vector<float>& embeddings,
                     const JobTimes& times) {
    if (status.ok()) {
      JobFinished(name, times, response->usage().input_tokens(), 0);
      for (int i = 0; i < response->embeddings_size(); ++i) {
        auto* values = response->mutable_embeddings(i)->mutable_values();
        values->Add(embeddings.begin() + static_cast<size_t>(i) * dimension,
                    embeddings.begin() + static_cast<size_t>(i + 1) * dimension);
      }
      SetTimings(times, response->mutable_timings());
    }
    call->FinishWith(status);
  };
  if (absl::Status s = model.worker->Submit(job); !s.ok()) return call->FinishWith(s);
  call->OnCancelDo([worker = model.worker.get(), job] { worker->Cancel(*job); });
  return call;
}

grpc::ServerUnaryReactor* RosettaService::ListModels(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* raw_request,
                                                     grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::ListModelsRequest, v1::ListModelsResponse>(this, raw_response,
                                                                            "ListModels");
  if (absl::Status s = Authenticate(*context); !s.ok()) return call->FinishWith(s);
  if (!call->Parse(*raw_request)) return call->FinishWith(Malformed(call->request()));
  v1::ListModelsResponse* response = call->response();
  absl::StatusOr<const ServedModel*> served = Resolve("");
  if (!served.ok()) return call->FinishWith(served.status());
  const ModelRegistry* registry = registry_.load();
  for (const auto& model : registry->models()) {
    FillModelInfo(*model, model.get() == *served, limits_, response->add_models());
  }
  return call->FinishWith(absl::OkStatus());
}

grpc::ServerUnaryReactor* RosettaService::GetModel(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* raw_request,
                                                   grpc::ByteBuffer* raw_response) {
  auto* call = new UnaryCall<v1::GetModelRequest, v1::ModelInfo>(this, raw_response, "GetModel");
  if (absl::Status s = Authenticate(*context); !s.ok()) return call->FinishWith(s);
  if (!call->Parse(*raw_request)) return call->FinishWith(Malformed(call->request()));
  const v1::GetModelRequest* request = &call->request();
  v1::ModelInfo* response = call->response();
  absl::StatusOr<const ServedModel*> served = Resolve(request->name());
  if (!served.ok()) return call->FinishWith(served.status());
  call->set_model((*served)->name);
  FillModelInfo(**served, *served == registry_.load()->Find(""), limits_, response);
  return call->FinishWith(absl::OkStatus());
}

}  // namespace rosetta::server
