// rosetta: the command-line client of rosettad.
//
//   rosetta translate [--model NAME] [--beam_size N] [--scores] [--json] [--stream] [TEXT...]
//   rosetta encode [--normalize] [--truncate] [--json] [TEXT...]
//   rosetta models [--json]
//   rosetta model [NAME]
//   rosetta health [--service NAME]
//
// Texts come from the arguments or, when there are none, one per stdin line, sent --batch_size
// lines per request; the output has one line per input, in input order. An RPC error prints
// "rosetta: CODE_NAME: message" and exits with status 1; usage errors exit with status 2.
// `health` prints the serving status of grpc.health.v1.Health and exits with status 0 only when it
// is SERVING (a container health check). The environment variable ROSETTA_ADDRESS, when set,
// replaces the default of --address. Every command connects in plaintext unless a --tls flag
// (or a ROSETTA_TLS_ variable) asks for TLS, and sends the API key of --api_key_file (or
// $ROSETTA_API_KEY) with every call when there is one.
#include <google/protobuf/util/json_util.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/channel_credentials.h"
#include "client/command_line.h"
#include "client/input_batches.h"
#include "client/output_format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "proto/status_names.h"
#include "rosetta/v1/rosetta.grpc.pb.h"

ABSL_FLAG(std::string, address, "localhost:50051",
          "Address of rosettad, host:port. The environment variable ROSETTA_ADDRESS, when set, "
          "replaces this default.");
ABSL_FLAG(std::string, model, "", "Model name; empty: the server's default model.");
ABSL_FLAG(double, deadline, 60, "Seconds each request may take; 0: no deadline.");
ABSL_FLAG(int, batch_size, 32, "Inputs sent per request.");
ABSL_FLAG(bool, tokens, false,
          "Inputs are space-separated tokens of the model's source vocabulary, sent as such "
          "instead of texts.");
ABSL_FLAG(bool, json, false, "Print one JSON object per line.");
ABSL_FLAG(std::optional<int>, beam_size, std::nullopt,
          "Beam size; 1 is greedy search. Unset: the model's default.");
ABSL_FLAG(std::optional<int>, num_hypotheses, std::nullopt,
          "Hypotheses printed per input, best first, tab-separated. Unset: the model's default.");
ABSL_FLAG(std::optional<float>, length_penalty, std::nullopt,
          "Score = log-probability / length^length_penalty. Unset: the model's default.");
ABSL_FLAG(std::optional<int>, max_length, std::nullopt,
          "Maximum generated tokens, end of sentence included. Unset: the model's default.");
ABSL_FLAG(std::optional<int>, min_length, std::nullopt,
          "Tokens generated before the end of sentence is allowed. Unset: the model's default.");
ABSL_FLAG(bool, scores, false, "Print each hypothesis' score before it: SCORE ||| TEXT.");
ABSL_FLAG(bool, stream, false,
          "Print each translation as soon as it and those before it are ready; for a single "
          "input with greedy search, show the tokens on stderr as they are decoded.");
ABSL_FLAG(bool, normalize, false, "Scale each embedding to unit L2 norm.");
ABSL_FLAG(bool, truncate, false, "Cut inputs longer than the model's maximum instead of failing.");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS, trusting the system's CAs (implied by the other --tls_ flags).");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM CA certificates that the server's certificate must chain to (TLS). Default: "
          "$ROSETTA_TLS_CA_FILE.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM client certificate, for a server that requires one (mutual TLS). Default: "
          "$ROSETTA_TLS_CERT_FILE.");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key of --tls_cert_file. Default: $ROSETTA_TLS_KEY_FILE.");
ABSL_FLAG(std::string, tls_server_name, "",
          "The name the server's certificate must carry, when not the host of --address. "
          "Default: $ROSETTA_TLS_SERVER_NAME.");
ABSL_FLAG(std::string, api_key_file, "",
          "File whose first line is the API key to send, for a server that requires one. "
          "Default: the key in $ROSETTA_API_KEY.");
ABSL_FLAG(std::string, service, "",
          "The service whose health to check: rosetta.v1.Rosetta, or empty for the server as a "
          "whole.");

namespace rosetta::client {
namespace {

using rosetta::v1::Rosetta;

constexpr int kExitRpcError = 1;
constexpr int kExitUsage = 2;

constexpr absl::string_view kConnectionFlags[] = {"address", "deadline"};
// Every command accepts these besides its own. The TLS files and name take their defaults from
// environment variables (ROSETTA_TLS_CA_FILE...), as --address does from ROSETTA_ADDRESS, so that a
// container's health check can reach a server that uses TLS; the API key comes from
// ROSETTA_API_KEY when --api_key_file is not given (a key on the command line would show in ps).
constexpr absl::string_view kSecurityFlags[] = {"tls",          "tls_ca_file",     "tls_cert_file",
                                                "tls_key_file", "tls_server_name", "api_key_file"};
constexpr absl::string_view kTranslateFlags[] = {
    "address",        "deadline",       "model",      "batch_size", "tokens", "json",  "beam_size",
    "num_hypotheses", "length_penalty", "max_length", "min_length", "scores", "stream"};
constexpr absl::string_view kEncodeFlags[] = {"address", "deadline", "model",     "batch_size",
                                              "tokens",  "json",     "normalize", "truncate"};
constexpr absl::string_view kModelsFlags[] = {"address", "deadline", "json"};
constexpr absl::string_view kHealthFlags[] = {"address", "deadline", "service"};
// A health check must answer quickly or count as failed.
constexpr double kHealthDefaultDeadline = 5;

constexpr char kUsage[] =
    "Usage: rosetta COMMAND [FLAGS] [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  translate [TEXT...]  translate the texts, or stdin lines when none are given\n"
    "  encode [TEXT...]     print the embedding of each text (or stdin line)\n"
    "  models               list the models the server has loaded\n"
    "  model [NAME]         print a model's description as JSON (default: the default model)\n"
    "  health               print the server's health (SERVING, NOT_SERVING); exit status 0\n"
    "                       only when SERVING\n"
    "\n"
    "Run 'rosetta COMMAND --help' for the flags of a command.\n";

// Prints a usage error; the commands' summary unless `command` is given.
int UsageError(absl::string_view message, absl::string_view command = "") {
  std::cerr << "rosetta: " << message << "\n";
  if (command.empty()) {
    std::cerr << kUsage;
  } else {
    std::cerr << "Run 'rosetta " << command << " --help' for its flags.\n";
  }
  return kExitUsage;
}

ChannelSecurity SecurityFromFlags() {
  return {.tls = absl::GetFlag(FLAGS_tls),
          .ca_file = absl::GetFlag(FLAGS_tls_ca_file),
          .cert_file = absl::GetFlag(FLAGS_tls_cert_file),
          .key_file = absl::GetFlag(FLAGS_tls_key_file),
          .server_name = absl::GetFlag(FLAGS_tls_server_name)};
}

// Prints "rosetta: CODE_NAME: message". For a batch after the first, adds the batch's inputs: the
// server counts inputs from the start of its request.
int RpcError(const grpc::Status& status, size_t batch_start = 0, size_t batch_size = 0) {
  std::cerr << "rosetta: " << StatusCodeName(status.error_code()) << ": " << status.error_message();
  if (batch_start > 0) {
    std::cerr << absl::StrFormat(" (in the request of inputs %d-%d, counted from 0)", batch_start,
                                 batch_start + batch_size - 1);
  }
  std::cerr << "\n";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    const std::string hint = ConnectionHint(status.error_message(), SecurityFromFlags().UsesTls());
    if (!hint.empty()) {
      std::cerr << "rosetta: " << hint << "\n";
    }
  }
  return kExitRpcError;
}

// gRPC's own log lines (a failed handshake) repeat what the call's status says: unless
// GRPC_VERBOSITY asks for them, a command-line tool keeps them off the terminal.
void QuietGrpcLog(gpr_log_func_args*) {}

// A response that breaks the API's contract (a missing or extra result).
int BadResponse(absl::string_view message) {
  std::cerr << "rosetta: bad response from the server: " << message << "\n";
  return kExitRpcError;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel() {
  grpc::ChannelArguments arguments;
  // The server bounds what it sends (ModelLimits); large batches of embeddings exceed gRPC's
  // default limit of 4 MiB.
  arguments.SetMaxReceiveMessageSize(-1);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentials(SecurityFromFlags(), &arguments);
  if (!credentials.ok()) return credentials.status();
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_address), *credentials, arguments);
}

// The API key sent with every call ("" for none): from --api_key_file, else $ROSETTA_API_KEY.
std::string& ApiKey() {
  static auto* key = new std::string();
  return *key;
}

// Sets the call's deadline (--deadline).
void SetDeadline(grpc::ClientContext* context) {
  const double seconds = absl::GetFlag(FLAGS_deadline);
  if (seconds <= 0) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(seconds)));
}

// Sets the call's deadline and its API key (a call of rosetta.v1.Rosetta).
void PrepareContext(grpc::ClientContext* context) {
  SetDeadline(context);
  if (!ApiKey().empty()) context->AddMetadata(kApiKeyMetadata, ApiKeyMetadataValue(ApiKey()));
}

// Puts `inputs` in `request`: as texts, or with --tokens as token lists.
template <typename Request>
void SetInputs(const std::vector<std::string>& inputs, Request* request) {
  const bool pre_tokenized = absl::GetFlag(FLAGS_tokens);
  for (const std::string& input : inputs) {
    if (pre_tokenized) {
      // An input without tokens still takes its place: the server rejects it by its index.
      rosetta::v1::TokenList* tokens = request->add_tokenized();
      for (std::string& token : SplitTokens(input)) tokens->add_tokens(std::move(token));
    } else {
      request->add_texts(input);
    }
  }
}

// Shows the partial translations of a stream on stderr, each extending the line shown so far.
class PartialEcho {
 public:
  void Show(const rosetta::v1::PartialTranslation& partial) {
    if (!partial.text().empty() || partial.new_tokens().empty()) {
      if (absl::StartsWith(partial.text(), shown_)) {
        std::cerr << partial.text().substr(shown_.size());
      } else {
        // Detokenization rewrote the text's end (a piece joined a word): start a new line.
        std::cerr << (open_ ? "\n" : "") << partial.text();
      }
      shown_ = partial.text();
    } else {
      // No text: show the tokens.
      std::string tokens = absl::StrJoin(partial.new_tokens(), " ");
      std::cerr << (open_ ? " " : "") << tokens;
      absl::StrAppend(&shown_, open_ ? " " : "", tokens);
    }
    open_ = true;
    std::cerr.flush();
  }

  // Ends the line shown, if any.
  void End() {
    if (open_) std::cerr << std::endl;
    open_ = false;
    shown_.clear();
  }

 private:
  std::string shown_;
  bool open_ = false;
};

std::string Help(absl::string_view command, absl::string_view arguments,
                 absl::Span<const absl::string_view> flags) {
  return absl::StrCat("Usage: rosetta ", command, " [FLAGS] ", arguments, "\n\nFlags:\n",
                      FlagsHelp(flags));
}

// Sets the flags of a command (its own and kSecurityFlags), fills `positional` with its other
// arguments, reads the API key and opens `channel` to the server. Returns the exit status when the
// command is over: help printed (0) or a usage error (2).
std::optional<int> ParseCommand(absl::string_view command, absl::string_view arguments_help,
                                absl::Span<const absl::string_view> own_flags,
                                const std::vector<std::string>& args,
                                std::vector<std::string>* positional,
                                std::shared_ptr<grpc::Channel>* channel) {
  std::vector<absl::string_view> flags(own_flags.begin(), own_flags.end());
  flags.insert(flags.end(), std::begin(kSecurityFlags), std::end(kSecurityFlags));
  // The defaults shown are the values before parsing.
  const std::string help = Help(command, arguments_help, flags);
  absl::StatusOr<ParsedArguments> parsed = ParseArguments(args, flags);
  if (!parsed.ok()) return UsageError(parsed.status().message(), command);
  if (parsed->help) {
    std::cout << help;
    return 0;
  }
  if (absl::GetFlag(FLAGS_deadline) < 0) return UsageError("--deadline must be >= 0", command);
  if (absl::GetFlag(FLAGS_batch_size) < 1) return UsageError("--batch_size must be >= 1", command);
  if (const std::string file = absl::GetFlag(FLAGS_api_key_file); !file.empty()) {
    absl::StatusOr<std::string> key = ReadApiKey(file);
    if (!key.ok()) return UsageError(key.status().message(), command);
    ApiKey() = *key;
  } else if (const char* value = std::getenv("ROSETTA_API_KEY"); value != nullptr) {
    absl::StatusOr<std::string> key = ApiKeyFrom(value, "ROSETTA_API_KEY");
    if (!key.ok()) return UsageError(key.status().message(), command);
    ApiKey() = *key;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> opened = OpenChannel();
  if (!opened.ok()) return UsageError(opened.status().message(), command);
  *channel = std::move(*opened);
  *positional = std::move(parsed->positional);
  return std::nullopt;
}

rosetta::v1::TranslateOptions TranslateOptionsFromFlags() {
  rosetta::v1::TranslateOptions options;
  // Unset flags stay unset so that the model's defaults apply; out-of-range values are the
  // server's to reject, with a message naming the limit.
  if (auto v = absl::GetFlag(FLAGS_beam_size)) options.set_beam_size(*v);
  if (auto v = absl::GetFlag(FLAGS_num_hypotheses)) options.set_num_hypotheses(*v);
  if (auto v = absl::GetFlag(FLAGS_length_penalty)) options.set_length_penalty(*v);
  if (auto v = absl::GetFlag(FLAGS_max_length)) options.set_max_length(*v);
  if (auto v = absl::GetFlag(FLAGS_min_length)) options.set_min_length(*v);
  // JSON lines always carry scores and tokens.
  options.set_return_scores(absl::GetFlag(FLAGS_scores) || absl::GetFlag(FLAGS_json));
  options.set_return_tokens(absl::GetFlag(FLAGS_json));
  return options;
}

// Translates one batch with Translate and prints its lines. Returns the exit status.
int TranslateBatch(Rosetta::Stub& stub, const rosetta::v1::TranslateRequest& request,
                   const TranslationFormat& format, size_t batch_start) {
  grpc::ClientContext context;
  PrepareContext(&context);
  rosetta::v1::TranslateResponse response;
  const grpc::Status status = stub.Translate(&context, request, &response);
  const int inputs = request.texts_size() + request.tokenized_size();
  if (!status.ok()) return RpcError(status, batch_start, inputs);
  if (response.translations_size() != inputs) {
    return BadResponse(
        absl::StrFormat("%d translations for %d inputs", response.translations_size(), inputs));
  }
  std::string lines;
  for (const rosetta::v1::Translation& translation : response.translations()) {
    absl::StrAppend(&lines, FormatTranslation(translation, format), "\n");
  }
  std::cout << lines << std::flush;
  return 0;
}

// Translates one batch with TranslateStream, printing each line as soon as it and those before it
// have arrived. Returns the exit status.
int TranslateBatchStreaming(Rosetta::Stub& stub, const rosetta::v1::TranslateRequest& request,
                            const TranslationFormat& format, size_t batch_start) {
  grpc::ClientContext context;
  PrepareContext(&context);
  const int inputs = request.texts_size() + request.tokenized_size();
  std::vector<std::optional<rosetta::v1::Translation>> results(inputs);
  int printed = 0;
  PartialEcho echo;
  std::string contract_error;

  std::unique_ptr<grpc::ClientReader<rosetta::v1::TranslateStreamResponse>> reader =
      stub.TranslateStream(&context, request);
  rosetta::v1::TranslateStreamResponse message;
  while (reader->Read(&message)) {
    if (message.result_case() == rosetta::v1::TranslateStreamResponse::RESULT_NOT_SET) {
      continue;  // a closing message with the totals only
    }
    const int index = message.index();
    if (index < 0 || index >= inputs || results[index].has_value()) {
      contract_error = absl::StrFormat("unexpected result for input %d of %d", index, inputs);
      context.TryCancel();
      break;
    }
    if (message.has_partial()) {
      echo.Show(message.partial());
      continue;
    }
    results[index] = std::move(*message.mutable_translation());
    echo.End();
    std::string lines;
    for (; printed < inputs && results[printed].has_value(); ++printed) {
      absl::StrAppend(&lines, FormatTranslation(*results[printed], format), "\n");
    }
    std::cout << lines << std::flush;
  }
  const grpc::Status status = reader->Finish();
  echo.End();
  if (!contract_error.empty()) return BadResponse(contract_error);
  if (!status.ok()) return RpcError(status, batch_start, inputs);
  if (printed != inputs) {
    return BadResponse(
        absl::StrFormat("the stream ended without the translation of input %d", printed));
  }
  return 0;
}

int Translate(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  std::shared_ptr<grpc::Channel> channel;
  if (auto exit_status =
          ParseCommand("translate", "[TEXT...]", kTranslateFlags, args, &positional, &channel)) {
    return *exit_status;
  }

  std::unique_ptr<Rosetta::Stub> stub = Rosetta::NewStub(channel);
  rosetta::v1::TranslateRequest base;
  base.set_model(absl::GetFlag(FLAGS_model));
  *base.mutable_options() = TranslateOptionsFromFlags();
  const TranslationFormat format = {.scores = absl::GetFlag(FLAGS_scores),
                                    .json = absl::GetFlag(FLAGS_json)};

  InputBatches batches(std::move(positional), &std::cin, absl::GetFlag(FLAGS_batch_size));
  std::vector<std::string> batch;
  while (batches.Next(&batch)) {
    rosetta::v1::TranslateRequest request = base;
    SetInputs(batch, &request);
    // The first failing batch ends the run: the lines printed so far are those of the batches
    // before it, and the exit status says the output is incomplete.
    const int exit_status =
        absl::GetFlag(FLAGS_stream)
            ? TranslateBatchStreaming(*stub, request, format, batches.batch_start())
            : TranslateBatch(*stub, request, format, batches.batch_start());
    if (exit_status != 0) return exit_status;
  }
  return 0;
}

int Encode(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  std::shared_ptr<grpc::Channel> channel;
  if (auto exit_status =
          ParseCommand("encode", "[TEXT...]", kEncodeFlags, args, &positional, &channel)) {
    return *exit_status;
  }

  std::unique_ptr<Rosetta::Stub> stub = Rosetta::NewStub(channel);
  const bool json = absl::GetFlag(FLAGS_json);
  InputBatches batches(std::move(positional), &std::cin, absl::GetFlag(FLAGS_batch_size));
  std::vector<std::string> batch;
  while (batches.Next(&batch)) {
    rosetta::v1::EncodeRequest request;
    request.set_model(absl::GetFlag(FLAGS_model));
    request.set_normalize(absl::GetFlag(FLAGS_normalize));
    request.set_truncate(absl::GetFlag(FLAGS_truncate));
    SetInputs(batch, &request);

    grpc::ClientContext context;
    PrepareContext(&context);
    rosetta::v1::EncodeResponse response;
    const grpc::Status status = stub->Encode(&context, request, &response);
    if (!status.ok()) return RpcError(status, batches.batch_start(), batch.size());
    if (response.embeddings_size() != static_cast<int>(batch.size())) {
      return BadResponse(
          absl::StrFormat("%d embeddings for %d inputs", response.embeddings_size(), batch.size()));
    }
    std::string lines;
    for (const rosetta::v1::Embedding& embedding : response.embeddings()) {
      absl::StrAppend(&lines, FormatEmbedding(embedding, json), "\n");
    }
    std::cout << lines << std::flush;
  }
  return 0;
}

// Prints `message` as JSON, on one line unless `pretty`, with the proto's field names and every
// field, zeros included. Returns the exit status.
int PrintJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = pretty;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    std::cerr << "rosetta: cannot print the response as JSON: " << status.ToString() << "\n";
    return kExitRpcError;
  }
  std::cout << absl::StripSuffix(json, "\n") << "\n";
  return 0;
}

int Models(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  std::shared_ptr<grpc::Channel> channel;
  if (auto exit_status = ParseCommand("models", "", kModelsFlags, args, &positional, &channel)) {
    return *exit_status;
  }
  if (!positional.empty()) {
    return UsageError("'models' takes no arguments (did you mean 'model NAME'?)", "models");
  }
  std::unique_ptr<Rosetta::Stub> stub = Rosetta::NewStub(channel);
  grpc::ClientContext context;
  PrepareContext(&context);
  rosetta::v1::ListModelsResponse response;
  const grpc::Status status =
      stub->ListModels(&context, rosetta::v1::ListModelsRequest(), &response);
  if (!status.ok()) return RpcError(status);
  if (absl::GetFlag(FLAGS_json)) {
    for (const rosetta::v1::ModelInfo& model : response.models()) {
      if (const int exit_status = PrintJson(model, /*pretty=*/false); exit_status != 0) {
        return exit_status;
      }
    }
  } else {
    std::cout << FormatModelTable(response);
  }
  return 0;
}

int Model(const std::vector<std::string>& args) {
  std::vector<std::string> positional;
  std::shared_ptr<grpc::Channel> channel;
  if (auto exit_status =
          ParseCommand("model", "[NAME]", kConnectionFlags, args, &positional, &channel)) {
    return *exit_status;
  }
  if (positional.size() > 1) return UsageError("'model' takes at most one NAME", "model");

  std::unique_ptr<Rosetta::Stub> stub = Rosetta::NewStub(channel);
  grpc::ClientContext context;
  PrepareContext(&context);
  rosetta::v1::GetModelRequest request;
  if (!positional.empty()) request.set_name(positional[0]);
  rosetta::v1::ModelInfo response;
  const grpc::Status status = stub->GetModel(&context, request, &response);
  if (!status.ok()) return RpcError(status);
  return PrintJson(response, /*pretty=*/true);
}

// Checks grpc.health.v1.Health for --service; prints its status. Exit status 0 only when SERVING.
int Health(const std::vector<std::string>& args) {
  absl::SetFlag(&FLAGS_deadline, kHealthDefaultDeadline);
  std::vector<std::string> positional;
  std::shared_ptr<grpc::Channel> channel;
  if (auto exit_status = ParseCommand("health", "", kHealthFlags, args, &positional, &channel)) {
    return *exit_status;
  }
  if (!positional.empty()) return UsageError("'health' takes no arguments", "health");
  using grpc::health::v1::HealthCheckResponse;
  std::unique_ptr<grpc::health::v1::Health::Stub> stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);  // health needs no API key
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return RpcError(status);
  std::cout << HealthCheckResponse::ServingStatus_Name(response.status()) << "\n";
  return response.status() == HealthCheckResponse::SERVING ? 0 : kExitRpcError;
}

int Run(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(&QuietGrpcLog);
  if (const char* address = std::getenv("ROSETTA_ADDRESS"); address != nullptr && *address) {
    absl::SetFlag(&FLAGS_address, address);
  }
  for (auto [variable, flag] : {std::pair{"ROSETTA_TLS_CA_FILE", &FLAGS_tls_ca_file},
                                {"ROSETTA_TLS_CERT_FILE", &FLAGS_tls_cert_file},
                                {"ROSETTA_TLS_KEY_FILE", &FLAGS_tls_key_file},
                                {"ROSETTA_TLS_SERVER_NAME", &FLAGS_tls_server_name}}) {
    if (const char* value = std::getenv(variable); value != nullptr && *value) {
      absl::SetFlag(flag, value);
    }
  }
  if (argc < 2) return UsageError("no command given");
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "translate") return Translate(args);
  if (command == "encode") return Encode(args);
  if (command == "models") return Models(args);
  if (command == "model") return Model(args);
  if (command == "health") return Health(args);
  if (command == "help" || command == "--help" || command == "-h") {
    std::cout << kUsage;
    return 0;
  }
  return UsageError(absl::StrCat("unknown command '", command, "'"));
}

}  // namespace
}  // namespace rosetta::client

int main(int argc, char** argv) { return rosetta::client::Run(argc, argv); }
