// rosettad in-process, called by real gRPC clients over loopback: results equal the engine's,
// concurrency and batching, continuous vs static ordering, deadlines, cancellation, a full queue,
// bad input of every kind (malformed wire bytes included), health and drain.
#include "server/server.h"

#include <atomic>
#include <filesystem>
#include <future>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/embedding_model.h"
#include "engine/model_loader.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "rosetta/v1/rosetta.grpc.pb.h"
#include "server/model_registry.h"
#include "server/requests.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// Arabic letters of the aren-transliteration source vocabulary, one token each.
const std::vector<std::string>& Letters() {
  static const auto* letters = new std::vector<std::string>{
      "ا", "ب", "ت", "ث", "ج", "ح", "خ", "د", "ذ", "ر", "ز", "س", "ش", "ص",
      "ض", "ط", "ظ", "ع", "غ", "ف", "ق", "ك", "ل", "م", "ن", "ه", "و", "ي"};
  return *letters;
}

std::vector<std::string> RandomTexts(int count, int max_tokens, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> length(1, max_tokens);
  std::uniform_int_distribution<int> letter(0, static_cast<int>(Letters().size()) - 1);
  std::vector<std::string> texts;
  for (int i = 0; i < count; ++i) {
    std::vector<std::string> tokens(length(rng));
    for (auto& t : tokens) t = Letters()[letter(rng)];
    texts.push_back(absl::StrJoin(tokens, " "));
  }
  return texts;
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = LoadTranslationModel(testing::ArenModel("v2/aren-transliteration"));
    ASSERT_TRUE(model.ok()) << model.status();
    engine_model_ = std::move(*model).release();
  }
  static void TearDownTestSuite() {
    delete engine_model_;
    engine_model_ = nullptr;
  }

  DaemonOptions Options() {
    DaemonOptions options;
    options.listen = "127.0.0.1:0";
    options.metrics_listen = "";  // metrics are recorded, not served (its stop takes ~2 s)
    options.models = {{"aren", testing::ArenModel("v2/aren-transliteration")},
                      {"aren-i8", testing::ArenModel("v2/aren-transliteration-i8")}};
    options.threads = 2;
    options.drain_timeout = absl::Seconds(20);
    return options;
  }

  void StartServer(const DaemonOptions& options, bool load = true) {
    server_ = std::make_unique<Server>(options);
    ASSERT_TRUE(server_->Start().ok());
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Rosetta::NewStub(channel_);
    health_ = grpc::health::v1::Health::NewStub(channel_);
    if (load) {
      ASSERT_TRUE(server_->LoadModels().ok());
    }
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Drain();
  }

  // The engine alone: what the server must answer.
  // The engine's translation of `text` alone (by `model`, default the float32 aren model).
  void ExpectComputesLikeTheEngine(ComputeType type);

  static std::string EngineTranslation(const std::string& text, const DecodingOptions& options,
                                       float* score = nullptr,
                                       const TranslationModel* model = nullptr) {
    if (model == nullptr) model = engine_model_;
    auto ids = model->EncodeText(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    auto result = TranslateBatch(model->transformer, {*ids}, options);
    EXPECT_TRUE(result.ok()) << result.status();
    if (score != nullptr) *score = (*result)[0][0].score;
    return model->DecodeText((*result)[0][0].tokens);
  }

  grpc::Status Translate(const v1::TranslateRequest& request, v1::TranslateResponse* response,
                         absl::Duration timeout = absl::Seconds(60)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return stub_->Translate(&context, request, response);
  }

  HealthCheckResponse::ServingStatus Health(const std::string& service) {
    grpc::ClientContext context;
    HealthCheckRequest request;
    request.set_service(service);
    HealthCheckResponse response;
    grpc::Status status = health_->Check(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  v1::ModelStats Stats(const std::string& model = "aren") {
    grpc::ClientContext context;
    v1::GetModelRequest request;
    request.set_name(model);
    v1::ModelInfo info;
    EXPECT_TRUE(stub_->GetModel(&context, request, &info).ok());
    return info.stats();
  }

  // A request that decodes for 250 steps (min_length = max_length).
  static v1::TranslateRequest LongRequest(const std::string& text = "ب ت ث") {
    v1::TranslateRequest request;
    request.add_texts(text);
    request.mutable_options()->set_beam_size(1);
    request.mutable_options()->set_min_length(250);
    request.mutable_options()->set_max_length(250);
    return request;
  }

  static TranslationModel* engine_model_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Rosetta::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

TranslationModel* ServerTest::engine_model_ = nullptr;

TEST_F(ServerTest, TranslatesLikeTheEngine) {
  StartServer(Options());
  const std::vector<std::string> texts = RandomTexts(10, 20, 1);
  for (int beam : {1, 2, 4}) {
    v1::TranslateRequest request;
    for (const auto& t : texts) request.add_texts(t);
    request.mutable_options()->set_beam_size(beam);
    request.mutable_options()->set_return_scores(true);
    request.mutable_options()->set_return_tokens(true);
    v1::TranslateResponse response;
    grpc::Status status = Translate(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.translations_size(), static_cast<int>(texts.size()));
    EXPECT_EQ(response.model(), "aren");
    DecodingOptions options = engine_model_->default_options;
    options.beam_size = beam;
    for (size_t i = 0; i < texts.size(); ++i) {
      float score = 0;
      const std::string expected = EngineTranslation(texts[i], options, &score);
      const v1::Hypothesis& h = response.translations(i).hypotheses(0);
      EXPECT_EQ(h.text(), expected) << "beam " << beam << " input " << i;
      EXPECT_NEAR(h.score(), score, 1e-5);
      EXPECT_EQ(absl::StrJoin(h.tokens(), " "), expected);
      EXPECT_EQ(response.translations(i).input_tokens(),
                static_cast<int>(engine_model_->EncodeText(texts[i])->size()));
    }
    EXPECT_GT(response.usage().output_tokens(), 0);
    EXPECT_GE(response.timings().inference_seconds(), 0);
  }
  // The published expectation of the model, and pre-tokenized input.
  v1::TranslateRequest request;
  auto* tokens = request.add_tokenized();
  for (const char* t : {"آ", "ت", "ز", "م", "و", "ن"}) tokens->add_tokens(t);
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(request, &response).ok());
  EXPECT_EQ(response.translations(0).hypotheses(0).text(), "a t z m o n");
  EXPECT_EQ(response.translations(0).hypotheses(0).tokens_size(), 0);  // not asked for

  // What the metrics saw: four calls, all OK, with their tokens.
  const std::string exposition = server_->metrics().Exposition();
  EXPECT_THAT(
      exposition,
      HasSubstr("rosetta_requests_total{code=\"OK\",method=\"Translate\",model=\"aren\"} 4"));
  EXPECT_THAT(exposition, HasSubstr("rosetta_request_duration_seconds_count{method=\"Translate\","
                                    "model=\"aren\"} 4"));
  EXPECT_THAT(exposition, HasSubstr("rosetta_model_info{model=\"aren-i8\",kind=\"translation\","
                                    "format=\"ctranslate2\",quantization=\"int8\","
                                    "compute_type=\"float32\"} 1"));
  EXPECT_THAT(exposition, HasSubstr("rosetta_running_sequences{model=\"aren\"} 0"));
}

TEST_F(ServerTest, SixtyFourConcurrentClientsGetTheirOwnResults) {
  StartServer(Options());
  constexpr int kClients = 64;
  const std::vector<std::string> texts = RandomTexts(kClients, 30, 2);
  std::vector<std::string> answers(kClients);
  std::vector<grpc::Status> statuses(kClients);
  std::atomic<int> ready{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      v1::TranslateRequest request;
      request.add_texts(texts[c]);
      request.mutable_options()->set_beam_size(1 + c % 3);
      ++ready;
      while (ready.load() < kClients) std::this_thread::yield();
      v1::TranslateResponse response;
      statuses[c] = Translate(request, &response);
      if (statuses[c].ok()) answers[c] = response.translations(0).hypotheses(0).text();
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < kClients; ++c) {
    ASSERT_TRUE(statuses[c].ok()) << statuses[c].error_message();
    DecodingOptions options = engine_model_->default_options;
    options.beam_size = 1 + c % 3;
    EXPECT_EQ(answers[c], EngineTranslation(texts[c], options)) << "client " << c;
  }
  const v1::ModelStats stats = Stats();
  EXPECT_EQ(stats.sentences(), kClients);
  EXPECT_GT(stats.max_batch_sequences(), 1) << "the clients were never batched together";
}

// --compute_type bfloat16 or int8: every client gets what the engine computing in that type gives
// its text alone, whatever it was batched with, and ListModels, the metrics and the engine agree
// on the mode.
void ServerTest::ExpectComputesLikeTheEngine(ComputeType type) {
  DaemonOptions daemon_options = Options();
  daemon_options.compute_type = type;
  StartServer(daemon_options);
  absl::StatusOr<std::unique_ptr<TranslationModel>> reduced =
      LoadTranslationModel(testing::ArenModel("v2/aren-transliteration"), {.compute_type = type});
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  constexpr int kClients = 32;
  const std::vector<std::string> texts = RandomTexts(kClients, 30, 7);
  std::vector<v1::TranslateResponse> responses(kClients);
  std::vector<grpc::Status> statuses(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      v1::TranslateRequest request;
      request.add_texts(texts[c]);
      request.mutable_options()->set_beam_size(1 + c % 2);
      request.mutable_options()->set_return_scores(true);
      statuses[c] = Translate(request, &responses[c]);
    });
  }
  for (auto& t : clients) t.join();
  int differ_from_float32 = 0;
  for (int c = 0; c < kClients; ++c) {
    ASSERT_TRUE(statuses[c].ok()) << statuses[c].error_message();
    DecodingOptions options = engine_model_->default_options;
    options.beam_size = 1 + c % 2;
    float score = 0, float32_score = 0;
    const v1::Hypothesis& h = responses[c].translations(0).hypotheses(0);
    EXPECT_EQ(h.text(), EngineTranslation(texts[c], options, &score, reduced->get())) << c;
    EXPECT_EQ(h.score(), score) << "client " << c;
    EngineTranslation(texts[c], options, &float32_score);
    if (float32_score != score) ++differ_from_float32;
  }
  EXPECT_GT(differ_from_float32, 0) << "the daemon computed in float32";
  EXPECT_GT(Stats().max_batch_sequences(), 1) << "the clients were never batched together";

  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).compute_type(), ComputeTypeName(type));
  EXPECT_EQ(list.models(1).compute_type(), ComputeTypeName(type));
  EXPECT_EQ(list.models(1).quantization(), "int8");
  EXPECT_THAT(server_->metrics().Exposition(),
              HasSubstr(absl::StrCat("compute_type=\"", ComputeTypeName(type), "\"} 1")));
}

TEST_F(ServerTest, ComputesInBfloat16LikeTheEngine) {
  if (!PackedBfloat16Supported()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  ExpectComputesLikeTheEngine(ComputeType::kBfloat16);
}

TEST_F(ServerTest, ComputesInInt8LikeTheEngine) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  ExpectComputesLikeTheEngine(ComputeType::kInt8);
}

// --model_compute_type: each model computes in its own type, and says so.
TEST_F(ServerTest, ComputeTypePerModel) {
  if (!PackedInt8Supported()) GTEST_SKIP() << "this CPU has no AVX512_VNNI";
  DaemonOptions daemon_options = Options();
  daemon_options.model_compute_types = {{"aren-i8", ComputeType::kInt8}};
  StartServer(daemon_options);
  absl::StatusOr<std::unique_ptr<TranslationModel>> int8 = LoadTranslationModel(
      testing::ArenModel("v2/aren-transliteration-i8"), {.compute_type = ComputeType::kInt8});
  ASSERT_TRUE(int8.ok()) << int8.status();
  absl::StatusOr<std::unique_ptr<TranslationModel>> int8_weights_in_float32 =
      LoadTranslationModel(testing::ArenModel("v2/aren-transliteration-i8"));
  ASSERT_TRUE(int8_weights_in_float32.ok()) << int8_weights_in_float32.status();
  const std::vector<std::string> texts = RandomTexts(12, 30, 11);
  DecodingOptions options = engine_model_->default_options;
  options.beam_size = 1;
  int differ = 0;
  for (const std::string& text : texts) {
    for (const char* model : {"aren", "aren-i8"}) {
      v1::TranslateRequest request;
      request.set_model(model);
      request.add_texts(text);
      request.mutable_options()->set_beam_size(1);
      request.mutable_options()->set_return_scores(true);
      v1::TranslateResponse response;
      grpc::Status status = Translate(request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      const v1::Hypothesis& h = response.translations(0).hypotheses(0);
      float score = 0;
      const bool reduced = std::string(model) == "aren-i8";
      EXPECT_EQ(h.text(), EngineTranslation(text, options, &score, reduced ? int8->get() : nullptr))
          << model << ": " << text;
      EXPECT_EQ(h.score(), score) << model << ": " << text;
      if (reduced) {
        float float32_score = 0;
        EngineTranslation(text, options, &float32_score, int8_weights_in_float32->get());
        if (float32_score != score) ++differ;
      }
    }
  }
  EXPECT_GT(differ, 0) << "aren-i8 computed in float32";

  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).compute_type(), "float32");
  EXPECT_EQ(list.models(1).compute_type(), "int8");
  const std::string metrics = server_->metrics().Exposition();
  EXPECT_THAT(metrics, HasSubstr("model=\"aren\""));
  EXPECT_THAT(metrics, HasSubstr("compute_type=\"float32\"} 1"));
  EXPECT_THAT(metrics, HasSubstr("compute_type=\"int8\"} 1"));
}

// A --model_compute_type for a model that is not served stops start-up before any model loads.
TEST_F(ServerTest, ComputeTypeForAnUnknownModelStopsStartUp) {
  DaemonOptions daemon_options = Options();
  daemon_options.model_compute_types = {{"arne", ComputeType::kFloat32}};
  StartServer(daemon_options, /*load=*/false);
  const absl::Status status = server_->LoadModels();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr("--model_compute_type: no model is named \"arne\""));
}

// While a long translation decodes, a short one sent later finishes first (continuous), and
// only after it with static batching. In the static case the two answers arrive within
// milliseconds of each other, so the order the clients see them in proves nothing: the short
// request's server-side queue time must cover most of the long one's decoding instead.
TEST_F(ServerTest, ShortRequestOvertakesLongOneWithContinuousBatching) {
  for (bool continuous : {true, false}) {
    SCOPED_TRACE(continuous ? "continuous" : "static");
    DaemonOptions options = Options();
    options.batching.continuous = continuous;
    options.batching.max_running_sequences = 32;
    StartServer(options);
    std::atomic<int> order{0};
    int long_rank = 0, short_rank = 0;
    double long_inference_seconds = 0;
    // 250 steps of 16 beams: long enough (tens of ms) that the short request, sent a few steps
    // in, arrives early in its decoding even when the machine is busy.
    v1::TranslateRequest long_request = LongRequest();
    for (const std::string& text : RandomTexts(7, 10, 5)) long_request.add_texts(text);
    long_request.mutable_options()->set_beam_size(2);
    std::thread long_client([&] {
      v1::TranslateResponse response;
      grpc::Status status = Translate(long_request, &response);
      long_rank = ++order;
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(response.translations(0).output_tokens(), 250);
      long_inference_seconds = response.timings().inference_seconds();
    });
    while (Stats().decoding_steps() < 5) absl::SleepFor(absl::Milliseconds(1));
    v1::TranslateRequest short_request;
    short_request.add_texts("ز م");
    short_request.mutable_options()->set_beam_size(1);
    v1::TranslateResponse response;
    ASSERT_TRUE(Translate(short_request, &response).ok());
    short_rank = ++order;
    long_client.join();
    const double short_queue_seconds = response.timings().queue_seconds();
    if (continuous) {
      // The long request still has about 245 of its 250 steps to go: a wide margin.
      EXPECT_LT(short_rank, long_rank);
      EXPECT_LT(short_queue_seconds, 0.5 * long_inference_seconds);
    } else {
      // Sent after 5 of the long request's 250 steps, it waited for the rest.
      EXPECT_GT(short_queue_seconds, 0.5 * long_inference_seconds)
          << "short queued " << short_queue_seconds << " s; long decoded " << long_inference_seconds
          << " s";
    }
    server_->Drain();
    server_.reset();
  }
}

TEST_F(ServerTest, DeadlineAndCancellationFreeTheBatch) {
  DaemonOptions options = Options();
  options.batching.max_decoding_length = 1024;
  StartServer(options);
  // 8 sentences of 4 beams for 1024 steps: hundreds of milliseconds, while the deadline is 20 ms
  // and each cancellation below is sent once the request runs.
  v1::TranslateRequest slow = LongRequest();
  for (int i = 0; i < 7; ++i) slow.add_texts(RandomTexts(1, 20, 10 + i)[0]);
  slow.mutable_options()->set_beam_size(4);
  slow.mutable_options()->set_min_length(1024);
  slow.mutable_options()->set_max_length(1024);
  v1::TranslateResponse response;
  grpc::Status status = Translate(slow, &response, absl::Milliseconds(20));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();

  // Cancellation by the client while the request decodes.
  grpc::ClientContext context;
  std::promise<grpc::Status> done;
  v1::TranslateResponse cancelled_response;
  stub_->async()->Translate(&context, &slow, &cancelled_response,
                            [&done](grpc::Status s) { done.set_value(s); });
  while (Stats().running_sequences() == 0) absl::SleepFor(absl::Milliseconds(1));
  context.TryCancel();
  EXPECT_EQ(done.get_future().get().error_code(), grpc::StatusCode::CANCELLED);

  // The worker let go of both: nothing runs, nothing waits, and it serves on. Each is counted
  // for what ended it (gRPC cancels a call whose deadline passes, too).
  for (int i = 0; i < 200 && (Stats().running_sequences() > 0 ||
                              Stats().cancelled() + Stats().deadline_exceeded() < 2);
       ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  const v1::ModelStats stats = Stats();
  EXPECT_EQ(stats.running_sequences(), 0);
  EXPECT_EQ(stats.queued_texts(), 0);
  EXPECT_EQ(stats.deadline_exceeded(), 1);
  EXPECT_EQ(stats.cancelled(), 1);

  // A stream that its client cancels while it decodes leaves the batch too.
  {
    grpc::ClientContext stream_context;
    auto reader = stub_->TranslateStream(&stream_context, slow);
    while (Stats().running_sequences() == 0) absl::SleepFor(absl::Milliseconds(1));
    stream_context.TryCancel();
    v1::TranslateStreamResponse message;
    while (reader->Read(&message)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  for (int i = 0; i < 200 && (Stats().running_sequences() > 0 || Stats().cancelled() < 2); ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(Stats().running_sequences(), 0);
  EXPECT_EQ(Stats().cancelled(), 2);
  v1::TranslateRequest quick;
  quick.add_texts("آ ت ز م و ن");
  ASSERT_TRUE(Translate(quick, &response).ok());
  EXPECT_EQ(response.translations(0).hypotheses(0).text(), "a t z m o n");
}

TEST_F(ServerTest, FullQueueAnswersResourceExhausted) {
  DaemonOptions options = Options();
  options.batching.max_queued_texts = 2;
  options.batching.max_running_sequences = 16;
  options.batching.max_decoding_length = 1024;
  options.limits.max_texts_per_request = 2;
  StartServer(options);
  // The queue stays full while this request decodes (16 beams of a 300-token source for 1024
  // steps: far longer than the checks below take); it is cancelled once they are done.
  grpc::ClientContext long_context;
  std::thread long_client([&] {
    v1::TranslateRequest request =
        LongRequest(RandomTexts(1, 1, 3)[0] + " " + absl::StrJoin(RandomTexts(299, 1, 4), " "));
    request.mutable_options()->set_beam_size(16);
    request.mutable_options()->set_min_length(1024);
    request.mutable_options()->set_max_length(1024);
    v1::TranslateResponse response;
    const grpc::Status status = stub_->Translate(&long_context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  });
  while (Stats().running_sequences() == 0) absl::SleepFor(absl::Milliseconds(1));
  // Two texts wait (the queue's limit: the batch has no beams left for them); a third does not
  // fit.
  v1::TranslateRequest waiting = LongRequest();
  waiting.add_texts("ج ح");
  waiting.mutable_options()->set_beam_size(16);
  std::thread waiting_client([&] {
    v1::TranslateResponse response;
    EXPECT_TRUE(Translate(waiting, &response).ok());
  });
  while (Stats().queued_texts() < 2) absl::SleepFor(absl::Milliseconds(1));
  v1::TranslateRequest extra;
  extra.add_texts("خ د");
  extra.mutable_options()->set_beam_size(1);
  v1::TranslateResponse response;
  grpc::Status status = Translate(extra, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("queue is full"));
  {
    v1::EncodeRequest request;
    request.add_texts("خ د");
    v1::EncodeResponse encoded;
    grpc::ClientContext context;
    status = stub_->Encode(&context, request, &encoded);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_THAT(status.error_message(), HasSubstr("queue is full"));
  }
  {
    grpc::ClientContext context;
    auto reader = stub_->TranslateStream(&context, extra);
    v1::TranslateStreamResponse message;
    EXPECT_FALSE(reader->Read(&message));
    status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // A request that is wrong in itself says so, full queue or not: retrying would not help it.
  v1::TranslateRequest too_many;
  for (int i = 0; i < 3; ++i) too_many.add_texts("خ د");
  status = Translate(too_many, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("max_texts_per_request"));
  v1::TranslateRequest empty;
  empty.add_texts("");
  status = Translate(empty, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Stats().queued_texts(), 2);  // the queue was full throughout
  long_context.TryCancel();
  long_client.join();
  waiting_client.join();
  EXPECT_EQ(Stats().rejected_queue_full(), 3);
  ASSERT_TRUE(Translate(extra, &response).ok());  // served once there is room

  // Options that could never fit the batch are refused instead of waiting forever.
  server_->Drain();
  options.batching.max_running_sequences = 1;
  StartServer(options);
  extra.mutable_options()->set_beam_size(2);
  status = Translate(extra, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 1 beams"));
}

TEST_F(ServerTest, BadInputGetsClearErrorsAndDisturbsNoOne) {
  DaemonOptions options = Options();
  options.limits.max_texts_per_request = 4;
  options.limits.max_tokens_per_request = 20;
  options.limits.max_tokens_per_text = 8;
  options.max_message_bytes = 64 << 10;
  StartServer(options);
  // A long request runs throughout and must come back intact.
  std::promise<std::string> bystander;
  std::thread bystander_client([&] {
    v1::TranslateRequest request = LongRequest("آ ت ز م و ن");
    request.mutable_options()->set_min_length(0);
    request.mutable_options()->set_max_length(250);
    v1::TranslateResponse response;
    grpc::Status status = Translate(request, &response);
    bystander.set_value(status.ok() ? response.translations(0).hypotheses(0).text()
                                    : status.error_message());
  });

  struct Case {
    std::string name;
    std::function<void(v1::TranslateRequest&)> make;
    grpc::StatusCode code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no inputs", [](auto& r) {}, grpc::StatusCode::INVALID_ARGUMENT, "no inputs"},
      {"empty text", [](auto& r) { r.add_texts(""); }, grpc::StatusCode::INVALID_ARGUMENT,
       "texts[0] is empty"},
      {"whitespace text",
       [](auto& r) {
         r.add_texts("ب");
         r.add_texts("  \t");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "texts[1] is empty"},
      // Protobuf itself refuses a proto3 string that is not UTF-8 while parsing.
      {"invalid UTF-8", [](auto& r) { r.add_texts(std::string("ب \xC3\x28", 5)); },
       grpc::StatusCode::INVALID_ARGUMENT, "not UTF-8"},
      {"too many texts",
       [](auto& r) {
         for (int i = 0; i < 5; ++i) r.add_texts("ب");
       },
       grpc::StatusCode::INVALID_ARGUMENT,
       "texts has 5 inputs; the limit is 4 (max_texts_per_request)"},
      {"text too long", [](auto& r) { r.add_texts("ب ت ث ج ح خ د ذ ر"); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "texts[0] has 9 tokens; the limit is 8 (max_tokens_per_text)"},
      {"text far too long", [](auto& r) { r.add_texts(std::string(10000, 'x')); },
       grpc::StatusCode::INVALID_ARGUMENT, "texts[0] is 10000 bytes"},
      {"request too long",
       [](auto& r) {
         for (int i = 0; i < 3; ++i) r.add_texts("ب ت ث ج ح خ د");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "max_tokens_per_request"},
      {"both kinds of input",
       [](auto& r) {
         r.add_texts("ب");
         r.add_tokenized()->add_tokens("ب");
       },
       grpc::StatusCode::INVALID_ARGUMENT, "texts and tokenized are both set"},
      {"empty token", [](auto& r) { r.add_tokenized()->add_tokens(""); },
       grpc::StatusCode::INVALID_ARGUMENT, "tokenized[0].tokens[0] is empty"},
      {"unknown model",
       [](auto& r) {
         r.set_model("nope");
         r.add_texts("ب");
       },
       grpc::StatusCode::NOT_FOUND, "model \"nope\" is not loaded; loaded: aren, aren-i8"},
      {"beam 0",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_beam_size(0);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.beam_size must be between 1 and 16, got 0"},
      {"beam 17",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_beam_size(17);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.beam_size is 17; the limit is 16"},
      {"hypotheses > beam",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_beam_size(2);
         r.mutable_options()->set_num_hypotheses(3);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.num_hypotheses"},
      {"max_length 0",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_max_length(0);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.max_length must be between 1 and 256"},
      {"max_length huge",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_max_length(100000);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.max_length"},
      {"min > max",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_max_length(5);
         r.mutable_options()->set_min_length(6);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.min_length"},
      {"negative length penalty",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_length_penalty(-1);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.length_penalty"},
      {"NaN length penalty",
       [](auto& r) {
         r.add_texts("ب");
         r.mutable_options()->set_length_penalty(NAN);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "options.length_penalty"},
  };
  for (const Case& c : cases) {
    v1::TranslateRequest request;
    c.make(request);
    v1::TranslateResponse response;
    grpc::Status status = Translate(request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.name << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.name;
  }
  // Unknown tokens map to the model's <unk>: translated, not refused, as text or as tokens.
  v1::TranslateRequest unknown;
  unknown.add_texts("ب qqq ت");
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(unknown, &response).ok());
  v1::TranslateRequest unknown_tokens, unk_tokens;
  for (const char* token : {"ب", "qqq", "ت"}) unknown_tokens.add_tokenized()->add_tokens(token);
  for (const char* token : {"ب", "<unk>", "ت"}) unk_tokens.add_tokenized()->add_tokens(token);
  v1::TranslateResponse unknown_response, unk_response;
  ASSERT_TRUE(Translate(unknown_tokens, &unknown_response).ok());
  ASSERT_TRUE(Translate(unk_tokens, &unk_response).ok());
  EXPECT_EQ(unknown_response.translations(0).hypotheses(0).text(),
            unk_response.translations(0).hypotheses(0).text());

  // Encode: too long without truncation, cut with it.
  {
    v1::EncodeRequest request;
    request.add_texts("ب ت ث ج ح خ د ذ ر ز");
    v1::EncodeResponse encoded;
    grpc::ClientContext context;
    grpc::Status status = stub_->Encode(&context, request, &encoded);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("set truncate"));
    request.set_truncate(true);
    grpc::ClientContext context2;
    ASSERT_TRUE(stub_->Encode(&context2, request, &encoded).ok());
    EXPECT_TRUE(encoded.embeddings(0).truncated());
    EXPECT_EQ(encoded.embeddings(0).tokens(), 8);
    EXPECT_EQ(encoded.embeddings(0).values_size(), 32);
    // Far longer than the bytes allowed without truncation: cut all the same, to the same
    // embedding, since it begins with the same tokens.
    const std::vector<float> short_values(encoded.embeddings(0).values().begin(),
                                          encoded.embeddings(0).values().end());
    v1::EncodeRequest far;
    far.set_truncate(true);
    far.add_texts(request.texts(0) + absl::StrJoin(std::vector<std::string>(2000, " ب"), ""));
    grpc::ClientContext context3;
    ASSERT_TRUE(stub_->Encode(&context3, far, &encoded).ok());
    EXPECT_TRUE(encoded.embeddings(0).truncated());
    EXPECT_EQ(encoded.embeddings(0).tokens(), 8);
    EXPECT_THAT(encoded.embeddings(0).values(), ::testing::ElementsAreArray(short_values));
  }

  // Malformed and truncated protobuf on the wire, through the generic stub.
  grpc::GenericStub generic(channel_);
  v1::TranslateRequest valid;
  valid.add_texts("ب ت");
  std::string bytes;
  valid.SerializeToString(&bytes);
  const std::vector<std::string> wire = {bytes.substr(0, bytes.size() - 2), "\xff\xff\xff\xff",
                                         std::string("\x12\x80\x80\x80\x80\x10", 6)};
  // Every unary method (TranslateStream's are in tests/daemon_test.py).
  const std::vector<std::pair<std::string, std::string>> methods = {
      {"Translate", "TranslateRequest"},
      {"Encode", "EncodeRequest"},
      {"GetModel", "GetModelRequest"},
      {"ListModels", "ListModelsRequest"}};
  for (const auto& [method, message] : methods) {
    for (const std::string& payload : wire) {
      grpc::ClientContext context;
      grpc::Slice slice(payload);
      grpc::ByteBuffer request(&slice, 1);
      grpc::ByteBuffer reply;
      std::promise<grpc::Status> done;
      generic.UnaryCall(&context, "/rosetta.v1.Rosetta/" + method, grpc::StubOptions(), &request,
                        &reply, [&done](grpc::Status s) { done.set_value(s); });
      grpc::Status status = done.get_future().get();
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << method << ": " << status.error_message();
      EXPECT_THAT(status.error_message(),
                  HasSubstr("malformed request: the bytes are not a valid rosetta.v1." + message))
          << method;
    }
  }

  // A message over --max_message_bytes: gRPC refuses it before the service sees it.
  v1::TranslateRequest huge;
  huge.add_texts(std::string(100 << 10, 'x'));
  const grpc::Status huge_status = Translate(huge, &response);
  EXPECT_EQ(huge_status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(huge_status.error_message(), HasSubstr("larger than max"));

  EXPECT_EQ(bystander.get_future().get(), "a t z m o n");
  bystander_client.join();
  ASSERT_TRUE(Translate(valid, &response).ok());
}

// --max_message_bytes bounds requests, not responses: an answer larger than it is delivered
// (to a client that accepts it) rather than failed after the work.
TEST_F(ServerTest, ResponsesMayBeLargerThanTheRequestLimit) {
  DaemonOptions options = Options();
  options.max_message_bytes = 1024;
  StartServer(options);
  v1::EncodeRequest request;
  for (const std::string& text : RandomTexts(20, 5, 9)) request.add_texts(text);
  v1::EncodeResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub_->Encode(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.embeddings_size(), 20);
  EXPECT_GT(response.ByteSizeLong(), 2 * 1024u);  // 20 x 32 floats
}

TEST_F(ServerTest, StreamsResultsAndTokens) {
  StartServer(Options());
  v1::TranslateRequest request;
  request.add_texts("آ ت ز م و ن");
  request.mutable_options()->set_beam_size(1);
  grpc::ClientContext context;
  auto reader = stub_->TranslateStream(&context, request);
  v1::TranslateStreamResponse message;
  std::vector<std::string> partial_tokens;
  int partials = 0;
  std::string final_text;
  bool saw_usage = false;
  while (reader->Read(&message)) {
    if (message.has_partial()) {
      ++partials;
      for (const auto& t : message.partial().new_tokens()) partial_tokens.push_back(t);
      EXPECT_EQ(message.partial().text(), absl::StrJoin(partial_tokens, " "));
    } else if (message.has_translation()) {
      EXPECT_EQ(message.index(), 0);
      final_text = message.translation().hypotheses(0).text();
    } else {
      saw_usage = message.usage().output_tokens() > 0;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(final_text, "a t z m o n");
  EXPECT_EQ(absl::StrJoin(partial_tokens, " "), "a t z m o n");
  EXPECT_GT(partials, 1);  // as they are decoded, not all at the end
  EXPECT_TRUE(saw_usage);

  // Cut at max_length: the last token is streamed too.
  request.mutable_options()->set_max_length(3);
  grpc::ClientContext cut_context;
  auto cut_reader = stub_->TranslateStream(&cut_context, request);
  partial_tokens.clear();
  final_text.clear();
  while (cut_reader->Read(&message)) {
    if (message.has_partial()) {
      for (const auto& t : message.partial().new_tokens()) partial_tokens.push_back(t);
    } else if (message.has_translation()) {
      final_text = message.translation().hypotheses(0).text();
    }
  }
  ASSERT_TRUE(cut_reader->Finish().ok());
  EXPECT_EQ(final_text, "a t z");
  EXPECT_EQ(absl::StrJoin(partial_tokens, " "), "a t z");

  // Each result is sent when its input is finished: a short input listed after a long one
  // comes first.
  v1::TranslateRequest long_short;
  long_short.add_texts(absl::StrJoin(std::vector<std::string>(60, "ت ب"), " "));
  long_short.add_texts("ب");
  grpc::ClientContext order_context;
  auto order_reader = stub_->TranslateStream(&order_context, long_short);
  std::vector<int> order;
  while (order_reader->Read(&message)) {
    if (message.has_translation()) order.push_back(message.index());
  }
  ASSERT_TRUE(order_reader->Finish().ok());
  EXPECT_THAT(order, ::testing::ElementsAre(1, 0));

  // Several inputs: each comes once, with its index.
  v1::TranslateRequest many;
  const auto texts = RandomTexts(6, 15, 4);
  for (const auto& t : texts) many.add_texts(t);
  grpc::ClientContext context2;
  auto reader2 = stub_->TranslateStream(&context2, many);
  std::map<int, std::string> results;
  while (reader2->Read(&message)) {
    EXPECT_FALSE(message.has_partial());
    if (message.has_translation()) {
      EXPECT_EQ(results.count(message.index()), 0u);
      results[message.index()] = message.translation().hypotheses(0).text();
    }
  }
  ASSERT_TRUE(reader2->Finish().ok());
  ASSERT_EQ(results.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(results[i], EngineTranslation(texts[i], engine_model_->default_options));
  }
}

TEST_F(ServerTest, ListsModelsAndEncodes) {
  StartServer(Options());
  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).name(), "aren");
  EXPECT_TRUE(list.models(0).is_default());
  EXPECT_EQ(list.models(1).quantization(), "int8");
  EXPECT_EQ(list.models(0).kind(), v1::MODEL_KIND_TRANSLATION);
  EXPECT_EQ(list.models(0).embedding_dimension(), 32);
  // What a client needs to know of the model, and the limits it is held to (the defaults).
  const v1::ModelInfo& aren = list.models(0);
  EXPECT_EQ(aren.architecture(), "TransformerBase (CTranslate2 binary version 2)");
  EXPECT_EQ(aren.format(), "ctranslate2");
  EXPECT_EQ(aren.quantization(), "float32");
  EXPECT_EQ(aren.compute_type(), "float32");
  EXPECT_EQ(aren.source_vocabulary_size(), 51);
  EXPECT_EQ(aren.target_vocabulary_size(), 43);
  EXPECT_EQ(aren.encoder_layers(), 6);
  EXPECT_EQ(aren.decoder_layers(), 6);
  EXPECT_EQ(aren.batching(), "continuous");
  EXPECT_EQ(aren.default_options().beam_size(), engine_model_->default_options.beam_size);
  EXPECT_EQ(aren.default_options().max_length(), 256);
  EXPECT_EQ(aren.limits().max_texts_per_request(), 128);
  EXPECT_EQ(aren.limits().max_tokens_per_text(), 512);
  EXPECT_EQ(aren.limits().max_tokens_per_request(), 16384);
  EXPECT_EQ(aren.limits().max_decoding_length(), 256);
  EXPECT_EQ(aren.limits().max_beam_size(), 16);
  EXPECT_EQ(aren.limits().max_queued_texts(), 1024);
  EXPECT_EQ(aren.limits().batch_token_budget(), 4096);
  EXPECT_EQ(aren.limits().max_running_sequences(), 16);  // max(16, 8 x 2 threads)

  v1::EncodeRequest request;
  request.add_texts("آ ت ز");
  request.add_texts("م و ن");
  request.set_normalize(true);
  v1::EncodeResponse response;
  grpc::ClientContext context2;
  ASSERT_TRUE(stub_->Encode(&context2, request, &response).ok());
  EXPECT_EQ(response.dimension(), 32);
  ASSERT_EQ(response.embeddings_size(), 2);
  for (const auto& e : response.embeddings()) {
    double norm = 0;
    for (float v : e.values()) norm += v * v;
    EXPECT_NEAR(norm, 1.0, 1e-5);
  }
}

// A --max_tokens_per_text that leaves no room for a token beside the special tokens a model
// adds to every input (BERT's [CLS] and [SEP], Marian's </s>) stops start-up: every text would be
// refused, or cut to more tokens than the limit. One more token is enough.
TEST_F(ServerTest, TokenLimitMustLeaveRoomBesideSpecialTokens) {
  const char* bert = std::getenv("ROSETTA_BERT_MODEL");
  const char* marian = std::getenv("ROSETTA_MARIAN_MODEL");
  if (bert == nullptr || marian == nullptr) {
    GTEST_SKIP() << "ROSETTA_BERT_MODEL or ROSETTA_MARIAN_MODEL is not set (ctest sets them)";
  }
  for (auto [path, specials] : {std::pair{bert, 2}, std::pair{marian, 1}}) {
    SCOPED_TRACE(path);
    DaemonOptions options = Options();
    options.models = {{"m", path}};
    options.limits.max_tokens_per_text = specials;
    {
      auto registry = ModelRegistry::Load(options, 1);
      ASSERT_FALSE(registry.ok());
      EXPECT_TRUE(absl::IsInvalidArgument(registry.status())) << registry.status();
      EXPECT_THAT(registry.status().message(),
                  HasSubstr(absl::StrCat("max_tokens_per_text ", specials,
                                         " leaves no room for a token beside the model's ",
                                         specials, " special token")));
    }
    options.limits.max_tokens_per_text = specials + 1;
    auto registry = ModelRegistry::Load(options, 1);
    ASSERT_TRUE(registry.ok()) << registry.status();
    // Cut to the limit: one token of the text and the specials.
    v1::EncodeRequest request;
    request.add_texts("hello world again and again");
    request.set_truncate(true);
    auto prepared = PrepareEncode(request, *(*registry)->Find(""), options.limits);
    ASSERT_TRUE(prepared.ok()) << prepared.status();
    EXPECT_EQ(prepared->inputs[0].size(), static_cast<size_t>(specials + 1));
    EXPECT_TRUE(prepared->truncated[0]);
  }
}

// An embedding-only model (BERT, sentence-transformers layout) beside a translation model.
TEST_F(ServerTest, ServesAnEmbeddingModel) {
  const char* bert = std::getenv("ROSETTA_BERT_MODEL");
  if (bert == nullptr) GTEST_SKIP() << "ROSETTA_BERT_MODEL is not set (ctest sets it)";
  DaemonOptions options = Options();
  options.models.push_back({"bert", bert});
  StartServer(options);
  grpc::ClientContext list_context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&list_context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 3);
  const v1::ModelInfo& info = list.models(2);
  EXPECT_EQ(info.kind(), v1::MODEL_KIND_EMBEDDING);
  EXPECT_EQ(info.decoder_layers(), 0);
  EXPECT_THAT(info.pooling(), HasSubstr("normalized"));

  // The daemon's vectors are the engine's.
  auto engine = LoadEmbeddingModel(bert);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::vector<std::string> texts = {"Hello, world!", "The café is closed on Mondays.",
                                          "短い文", "a"};
  v1::EncodeRequest request;
  request.set_model("bert");
  for (const auto& t : texts) request.add_texts(t);
  v1::EncodeResponse response;
  grpc::ClientContext context;
  grpc::Status status = stub_->Encode(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.embeddings_size(), static_cast<int>(texts.size()));
  EXPECT_EQ(response.dimension(), (*engine)->dimension());
  Workspace workspace;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = (*engine)->Tokenize(texts[i], false, nullptr);
    ASSERT_TRUE(ids.ok());
    std::vector<float> expected((*engine)->dimension());
    (*engine)->Embed(std::span(&*ids, 1), workspace, expected.data());
    EXPECT_EQ(response.embeddings(i).tokens(), static_cast<int>(ids->size()));
    for (int j = 0; j < (*engine)->dimension(); ++j) {
      ASSERT_NEAR(response.embeddings(i).values(j), expected[j], 1e-5) << texts[i];
    }
  }

  // What an embedding model refuses.
  v1::TranslateRequest translate;
  translate.set_model("bert");
  translate.add_texts("hello");
  v1::TranslateResponse translated;
  status = Translate(translate, &translated);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("is an embedding model"));
  v1::EncodeRequest tokenized;
  tokenized.set_model("bert");
  tokenized.add_tokenized()->add_tokens("hello");
  grpc::ClientContext context2;
  status = stub_->Encode(&context2, tokenized, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("takes texts"));
  // Too long: refused, or cut when asked.
  v1::EncodeRequest long_text;
  long_text.set_model("bert");
  std::string words;
  for (int i = 0; i < 600; ++i) words += "word ";
  long_text.add_texts(words);
  grpc::ClientContext context3;
  status = stub_->Encode(&context3, long_text, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("(max_tokens_per_text)"));
  long_text.set_truncate(true);
  grpc::ClientContext context4;
  status = stub_->Encode(&context4, long_text, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.embeddings(0).truncated());
  EXPECT_EQ(response.embeddings(0).tokens(), info.limits().max_tokens_per_text());
  // Far past the bytes allowed without truncation (words split by punctuation only, then one
  // 100 KB word): cut to the same first tokens as the engine cuts the whole text to.
  std::string far;
  for (int i = 0; i < 20000; ++i) far += "word,";
  far += std::string(100000, 'y');
  auto far_ids = (*engine)->Tokenize(far, /*truncate=*/true, nullptr);
  ASSERT_TRUE(far_ids.ok());
  ASSERT_EQ(static_cast<int>(far_ids->size()), info.limits().max_tokens_per_text());
  std::vector<float> far_expected((*engine)->dimension());
  (*engine)->Embed(std::span(&*far_ids, 1), workspace, far_expected.data());
  long_text.set_texts(0, far);
  grpc::ClientContext context5;
  status = stub_->Encode(&context5, long_text, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(response.embeddings(0).truncated());
  for (int j = 0; j < (*engine)->dimension(); ++j) {
    ASSERT_NEAR(response.embeddings(0).values(j), far_expected[j], 1e-5);
  }
}

TEST_F(ServerTest, ServesEveryModelOfAModelsDirectory) {
  const std::string dir = testing::MakeTempDir("models_dir");
  for (const char* name : {"aren-transliteration", "aren-transliteration-i16"}) {
    std::filesystem::create_directory_symlink(testing::ArenModel(std::string("v2/") + name),
                                              dir + "/" + name);
  }
  testing::WriteFile(dir + "/README", "not a model");
  DaemonOptions options = Options();
  options.models.clear();
  options.models_dir = dir;
  StartServer(options);
  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(stub_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  ASSERT_EQ(list.models_size(), 2);
  EXPECT_EQ(list.models(0).name(), "aren-transliteration");
  EXPECT_EQ(list.models(1).name(), "aren-transliteration-i16");
  EXPECT_EQ(list.models(1).quantization(), "int16");
  v1::TranslateRequest request;
  request.set_model("aren-transliteration-i16");
  request.add_texts("آ ت ز م و ن");
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(request, &response).ok());
  EXPECT_EQ(response.translations(0).hypotheses(0).text(), "a t z m o n");
}

TEST_F(ServerTest, MaxConnectionAgeMakesClientsReconnect) {
  DaemonOptions options = Options();
  // Long enough for the first call to finish on the first connection, even under sanitizers.
  options.max_connection_age = absl::Seconds(3);
  StartServer(options);
  v1::TranslateRequest request;
  request.add_texts("آ ت ز م و ن");
  v1::TranslateResponse response;
  ASSERT_TRUE(Translate(request, &response).ok());
  ASSERT_EQ(channel_->GetState(false), GRPC_CHANNEL_READY);
  // The server ends the connection after about 3 seconds (GOAWAY): the channel leaves READY.
  const absl::Time end = absl::Now() + absl::Seconds(20);
  while (channel_->GetState(false) == GRPC_CHANNEL_READY && absl::Now() < end) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_NE(channel_->GetState(false), GRPC_CHANNEL_READY);
  // And the next call connects again.
  response.Clear();
  grpc::Status status = Translate(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.translations(0).hypotheses(0).text(), "a t z m o n");
}

// The daemon's main thread, told to stop while models load, refuses to let them serve: the
// loaded models then take no call, and the process may exit without a drain.
TEST_F(ServerTest, LoadedModelsServeOnlyWhenAllowed) {
  StartServer(Options(), /*load=*/false);
  int asked = 0;
  const absl::Status status = server_->LoadModels([&] {
    ++asked;
    return false;
  });
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_EQ(asked, 1);
  EXPECT_EQ(Health(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health(Server::kServiceName), HealthCheckResponse::NOT_SERVING);
  v1::TranslateRequest request;
  request.add_texts("ب");
  v1::TranslateResponse response;
  const grpc::Status call = Translate(request, &response);
  EXPECT_EQ(call.error_code(), grpc::StatusCode::UNAVAILABLE) << call.error_message();
}

TEST_F(ServerTest, HealthFollowsLoadingServingDraining) {
  StartServer(Options(), /*load=*/false);
  EXPECT_EQ(Health(""), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(Health(Server::kServiceName), HealthCheckResponse::NOT_SERVING);
  v1::TranslateRequest request;
  request.add_texts("ب");
  v1::TranslateResponse response;
  grpc::Status status = Translate(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("loading"));

  ASSERT_TRUE(server_->LoadModels().ok());
  EXPECT_EQ(Health(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(Health(Server::kServiceName), HealthCheckResponse::SERVING);

  // Drain while requests are in flight: they all finish; new ones are refused.
  constexpr int kInFlight = 8;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kInFlight; ++i) {
    clients.emplace_back([&, i] {
      v1::TranslateResponse r;
      grpc::Status s = Translate(LongRequest(RandomTexts(1, 10, 50 + i)[0]), &r);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (s.ok() && r.translations(0).output_tokens() == 250) ++ok;
    });
  }
  while (Stats().running_sequences() + Stats().queued_texts() < kInFlight) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  std::thread drainer([&] { EXPECT_EQ(server_->Drain(), 0); });
  // Until the in-flight requests finish, the server is up but refuses new work.
  bool saw_refusal = false;
  for (int i = 0; i < 100 && !saw_refusal; ++i) {
    grpc::Status s = Translate(request, &response);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE &&
        s.error_message().find("shutting down") != std::string::npos) {
      saw_refusal = true;
      EXPECT_EQ(Health(""), HealthCheckResponse::NOT_SERVING);
    }
  }
  EXPECT_TRUE(saw_refusal);
  for (auto& c : clients) c.join();
  drainer.join();
  EXPECT_EQ(ok.load(), kInFlight);
}

TEST_F(ServerTest, DrainTimeoutEndsWhatIsLeftWithUnavailable) {
  DaemonOptions options = Options();
  options.drain_timeout = absl::Milliseconds(1);
  options.batching.max_running_sequences = 1;
  StartServer(options);
  std::vector<std::thread> clients;
  std::vector<grpc::Status> statuses(3);
  for (int i = 0; i < 3; ++i) {
    clients.emplace_back([&, i] {
      v1::TranslateResponse r;
      statuses[i] = Translate(LongRequest(), &r);
    });
  }
  while (Stats().running_sequences() + Stats().queued_texts() < 3) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_GT(server_->Drain(), 0);
  for (auto& c : clients) c.join();
  int unavailable = 0;
  for (const auto& s : statuses) {
    // Every accepted request ends explicitly: finished, or UNAVAILABLE with a reason.
    if (!s.ok()) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr("shut down"));
      ++unavailable;
    }
  }
  EXPECT_GT(unavailable, 0);
}

}  // namespace
}  // namespace rosetta::server
