#include "server/daemon_options.h"

#include <fstream>
#include <functional>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace rosetta::server {

namespace {

struct Flag {
  const char* name;
  const char* help;
  // Applies a value; an error message on a bad value.
  std::function<absl::Status(absl::string_view value, DaemonOptions& options)> set;
};

absl::Status BadValue(absl::string_view flag, absl::string_view value, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", value, "\" is not ", want));
}

// An int flag with a minimum.
Flag IntFlag(const char* name, const char* help, int minimum,
             std::function<int&(DaemonOptions&)> field,
             int maximum = std::numeric_limits<int>::max()) {
  return Flag{name, help, [=](absl::string_view value, DaemonOptions& o) -> absl::Status {
                int parsed = 0;
                if (!absl::SimpleAtoi(value, &parsed) || parsed < minimum || parsed > maximum) {
                  return BadValue(name, value,
                                  maximum == std::numeric_limits<int>::max()
                                      ? absl::StrCat("an integer >= ", minimum)
                                      : absl::StrCat("an integer from ", minimum, " to ", maximum));
                }
                field(o) = parsed;
                return absl::OkStatus();
              }};
}

// A string flag, taken as it is.
Flag StringFlag(const char* name, const char* help,
                std::function<std::string&(DaemonOptions&)> field) {
  return Flag{name, help, [=](absl::string_view value, DaemonOptions& o) -> absl::Status {
                field(o) = std::string(value);
                return absl::OkStatus();
              }};
}

Flag SecondsFlag(const char* name, const char* help, double scale,
                 std::function<absl::Duration&(DaemonOptions&)> field) {
  return Flag{name, help, [=](absl::string_view value, DaemonOptions& o) -> absl::Status {
                double parsed = 0;
                if (!absl::SimpleAtod(value, &parsed) || !(parsed >= 0)) {
                  return BadValue(name, value, "a non-negative number");
                }
                field(o) = absl::Seconds(parsed * scale);
                return absl::OkStatus();
              }};
}

const std::vector<Flag>& Flags() {
  static const auto* flags = new std::vector<Flag>{
      {"listen",
       "Address to serve gRPC on, host:port (port 0: any free port). Default 0.0.0.0:50051.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         if (!absl::StrContains(v, ':')) return BadValue("listen", v, "host:port");
         o.listen = std::string(v);
         return absl::OkStatus();
       }},
      {"metrics_listen",
       "Address of the Prometheus endpoint /metrics, host:port (port 0: any free port; \"none\": "
       "no metrics). Default 0.0.0.0:9400.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         if (v == "none") {
           o.metrics_listen.clear();
           return absl::OkStatus();
         }
         if (!absl::StrContains(v, ':')) return BadValue("metrics_listen", v, "host:port or none");
         o.metrics_listen = std::string(v);
         return absl::OkStatus();
       }},
      StringFlag("tls_cert_file",
                 "PEM certificate chain (the server's certificate first): serve gRPC over TLS "
                 "instead of plaintext. Needs --tls_key_file. The files are re-read every "
                 "--tls_reload_seconds, so a rotated certificate takes effect without a restart.",
                 [](DaemonOptions& o) -> std::string& { return o.tls.cert_file; }),
      StringFlag("tls_key_file",
                 "PEM private key of --tls_cert_file's first certificate (not encrypted).",
                 [](DaemonOptions& o) -> std::string& { return o.tls.key_file; }),
      StringFlag("tls_client_ca_file",
                 "PEM CA certificates: clients must present a certificate signed by one of them "
                 "(mutual TLS). Needs --tls_cert_file.",
                 [](DaemonOptions& o) -> std::string& { return o.tls.client_ca_file; }),
      StringFlag("api_keys_file",
                 "File of API keys, one per line (at least 16 characters each; '#' comments): "
                 "every call of rosetta.v1.Rosetta must then send the metadata "
                 "\"authorization: Bearer KEY\" with one of them (UNAUTHENTICATED otherwise). "
                 "Health and reflection stay open. Re-read every --api_keys_reload_seconds.",
                 [](DaemonOptions& o) -> std::string& { return o.api_keys_file; }),
      SecondsFlag("api_keys_reload_seconds",
                  "How often --api_keys_file is re-read, so that keys are added and revoked "
                  "without a restart (0: never). Default 60.",
                  1.0,
                  [](DaemonOptions& o) -> absl::Duration& { return o.api_keys_reload_interval; }),
      {"tls_reload_seconds", "How often the TLS files are re-read, in seconds (>= 1). Default 60.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         int seconds = 0;
         if (!absl::SimpleAtoi(v, &seconds) || seconds < 1) {
           return BadValue("tls_reload_seconds", v, "an integer >= 1");
         }
         o.tls.reload_interval = absl::Seconds(seconds);
         return absl::OkStatus();
       }},
      {"model",
       "A model to serve, NAME=PATH: a CTranslate2 or Hugging Face Marian directory, or a Hub "
       "id org/name[@revision] fetched into the Hugging Face cache (HF_HOME, HF_HUB_CACHE, "
       "HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE). Repeat for more; the first is the default. PATH "
       "alone names the model after its last component.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         ModelSpec spec;
         const size_t eq = v.find('=');
         if (eq == absl::string_view::npos) {
           spec.path = std::string(v);
           absl::string_view trimmed = absl::StripSuffix(v, "/");
           trimmed = trimmed.substr(0, trimmed.find('@'));  // a Hub id's revision
           spec.name = std::string(trimmed.substr(trimmed.rfind('/') + 1));
         } else {
           spec.name = std::string(v.substr(0, eq));
           spec.path = std::string(v.substr(eq + 1));
         }
         if (spec.name.empty() || spec.path.empty()) return BadValue("model", v, "NAME=PATH");
         o.models.push_back(std::move(spec));
         return absl::OkStatus();
       }},
      StringFlag("models_dir", "Serve every model directory inside this directory, named after it.",
                 [](DaemonOptions& o) -> std::string& { return o.models_dir; }),
      IntFlag("threads",
              "Engine threads per model; 0: the CPUs this process may use (cgroup "
              "limits included). Default 0.",
              0, [](DaemonOptions& o) -> int& { return o.threads; }),
      {"compute_type",
       "How the models' linear layers multiply: float32 (default); bfloat16 (inputs and "
       "weights rounded to bfloat16, float32 sums: 1.5x to 2.2x as fast, results within "
       "bfloat16 rounding; CPUs with AVX512_BF16); int8 (weights quantized to int8 per output "
       "column, inputs per row, int32 sums: 2.6x to 4.2x as fast; CPUs with AVX512_VNNI).",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         absl::StatusOr<ComputeType> type = ParseComputeType(v);
         if (!type.ok()) return BadValue("compute_type", v, "float32, bfloat16 or int8");
         o.compute_type = *type;
         return absl::OkStatus();
       }},
      {"model_compute_type",
       "NAME=TYPE: model NAME computes in TYPE (float32, bfloat16 or int8) instead of "
       "--compute_type. Repeat for more models.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         const size_t eq = v.find('=');
         if (eq == absl::string_view::npos || eq == 0) {
           return BadValue("model_compute_type", v, "NAME=TYPE");
         }
         absl::StatusOr<ComputeType> type = ParseComputeType(v.substr(eq + 1));
         if (!type.ok()) {
           return BadValue("model_compute_type", v,
                           "NAME=TYPE with TYPE float32, bfloat16 or int8");
         }
         o.model_compute_types[std::string(v.substr(0, eq))] = *type;
         return absl::OkStatus();
       }},
      {"batching",
       "continuous (default): sentences join and leave the running batch at every "
       "decoding step; static: a batch runs to completion before the next is formed.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         if (v != "continuous" && v != "static") {
           return BadValue("batching", v, "continuous or static");
         }
         o.batching.continuous = v == "continuous";
         return absl::OkStatus();
       }},
      IntFlag("max_queued_texts",
              "Texts waiting per model; beyond, RESOURCE_EXHAUSTED. Default 1024.", 1,
              [](DaemonOptions& o) -> int& { return o.batching.max_queued_texts; }),
      IntFlag("batch_token_budget",
              "Source tokens admitted into the running batch in one "
              "encoder pass. Default 4096.",
              1, [](DaemonOptions& o) -> int& { return o.batching.batch_token_budget; }),
      IntFlag("max_running_sequences",
              "Beams decoded together per model (each beam of a sentence counts); 0: "
              "max(16, 8 x threads), past which a step on a CPU is compute-bound. "
              "Default 0.",
              0, [](DaemonOptions& o) -> int& { return o.batching.max_running_sequences; }),
      IntFlag("admission_wait_steps",
              "Continuous batching: while sentences decode, waiting texts join in one "
              "encoder pass once the oldest has waited this many decoding steps (0: at "
              "every step). Default 4.",
              0, [](DaemonOptions& o) -> int& { return o.batching.admission_wait_steps; }),
      IntFlag("admission_tokens",
              "Continuous batching: while sentences decode, waiting texts join as soon as "
              "they have this many source tokens in all. Default 256.",
              1, [](DaemonOptions& o) -> int& { return o.batching.admission_tokens; }),
      IntFlag(
          "max_decoding_length", "Cap of a request's max_length (at most 65536). Default 256.", 1,
          [](DaemonOptions& o) -> int& { return o.batching.max_decoding_length; }, 1 << 16),
      {"kv_cache_mb", "Self-attention cache per model, MiB (at most 1048576). Default 1024.",
       [](absl::string_view v, DaemonOptions& o) -> absl::Status {
         int64_t mb = 0;
         if (!absl::SimpleAtoi(v, &mb) || mb < 1 || mb > (int64_t{1} << 20))
           return BadValue("kv_cache_mb", v, "an integer from 1 to 1048576");
         o.batching.kv_cache_bytes = mb << 20;
         return absl::OkStatus();
       }},
      IntFlag("encode_token_budget", "Tokens of one Encode batch. Default 8192.", 1,
              [](DaemonOptions& o) -> int& { return o.batching.encode_token_budget; }),
      SecondsFlag("encode_max_wait_ms",
                  "Longest an Encode request waits for others to batch with (0: "
                  "none; requests that arrive while a batch runs form the next). "
                  "Default 0.",
                  1e-3,
                  [](DaemonOptions& o) -> absl::Duration& { return o.batching.encode_max_wait; }),
      IntFlag("max_texts_per_request", "Inputs of one request. Default 128.", 1,
              [](DaemonOptions& o) -> int& { return o.limits.max_texts_per_request; }),
      IntFlag("max_tokens_per_text", "Tokens of one input (also capped by the model). Default 512.",
              1, [](DaemonOptions& o) -> int& { return o.limits.max_tokens_per_text; }),
      IntFlag("max_tokens_per_request", "Tokens of all inputs of one request. Default 16384.", 1,
              [](DaemonOptions& o) -> int& { return o.limits.max_tokens_per_request; }),
      IntFlag("max_beam_size", "Largest beam_size a request may ask for (at most 16). Default 16.",
              1, [](DaemonOptions& o) -> int& { return o.limits.max_beam_size; }),
      SecondsFlag("drain_timeout",
                  "Seconds that requests in flight get to finish after SIGTERM "
                  "or SIGINT. Default 30.",
                  1.0, [](DaemonOptions& o) -> absl::Duration& { return o.drain_timeout; }),
      SecondsFlag("max_connection_age_seconds",
                  "Close client connections older than this (gRPC GOAWAY; +-10% jitter) so that "
                  "clients reconnect and spread over replicas added since; 0: never. Default 0.",
                  1.0, [](DaemonOptions& o) -> absl::Duration& { return o.max_connection_age; }),
      SecondsFlag("max_connection_age_grace_seconds",
                  "Time that calls in flight on a connection closed for its age get to finish; "
                  "past it they end with UNAVAILABLE. 0: as long as they take. Default 0.",
                  1.0,
                  [](DaemonOptions& o) -> absl::Duration& { return o.max_connection_age_grace; }),
      IntFlag("max_message_bytes",
              "Largest request accepted (responses are not capped). Default 4194304.", 1024,
              [](DaemonOptions& o) -> int& { return o.max_message_bytes; }),
  };
  return *flags;
}

absl::Status ApplyFlag(absl::string_view name, absl::string_view value, DaemonOptions& options) {
  for (const Flag& flag : Flags()) {
    if (name == flag.name) return flag.set(value, options);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
}

absl::Status ApplyConfigFile(const std::string& path, DaemonOptions& options, int depth);

// Applies argument pairs (name, value) in order; "config" reads a file.
absl::Status ApplyPairs(const std::vector<std::pair<std::string, std::string>>& pairs,
                        DaemonOptions& options, int depth) {
  for (const auto& [name, value] : pairs) {
    if (name == "config") {
      if (absl::Status s = ApplyConfigFile(value, options, depth + 1); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = ApplyFlag(name, value, options); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(const std::string& path, DaemonOptions& options, int depth) {
  if (depth > 4) return absl::InvalidArgumentError("--config: files include each other too deeply");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--config: cannot read ", path));
  std::vector<std::pair<std::string, std::string>> pairs;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    text = absl::StripPrefix(text, "--");
    const size_t eq = text.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": expected `name = value`, got \"", text, "\""));
    }
    pairs.emplace_back(std::string(absl::StripAsciiWhitespace(text.substr(0, eq))),
                       std::string(absl::StripAsciiWhitespace(text.substr(eq + 1))));
  }
  absl::Status status = ApplyPairs(pairs, options, depth);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DaemonUsage() {
  std::string usage =
      "usage: rosettad --model NAME=PATH [--model ...] [flags]\n"
      "Serves translation and embedding models over gRPC (package rosetta.v1, health and\n"
      "reflection included). Flags (also `name = value` lines in --config FILE):\n";
  for (const Flag& flag : Flags())
    absl::StrAppend(&usage, "  --", flag.name, "\n      ", flag.help, "\n");
  absl::StrAppend(&usage, "  --config FILE\n      Read more flags from FILE.\n");
  return usage;
}

absl::StatusOr<DaemonOptions> ParseDaemonOptions(int argc, const char* const* argv) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") return absl::NotFoundError(DaemonUsage());
    if (!absl::ConsumePrefix(&arg, "--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\""));
    }
    const size_t eq = arg.find('=');
    if (eq != absl::string_view::npos) {
      pairs.emplace_back(std::string(arg.substr(0, eq)), std::string(arg.substr(eq + 1)));
    } else if (i + 1 < argc) {
      pairs.emplace_back(std::string(arg), argv[++i]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", arg, " needs a value"));
    }
  }
  DaemonOptions options;
  if (absl::Status s = ApplyPairs(pairs, options, 0); !s.ok()) return s;
  if (options.models.empty() && options.models_dir.empty()) {
    return absl::InvalidArgumentError("no model to serve: give --model NAME=PATH or --models_dir");
  }
  if (options.limits.max_texts_per_request > options.batching.max_queued_texts) {
    // Such a request could never be queued, and RESOURCE_EXHAUSTED tells clients to retry.
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_texts_per_request (", options.limits.max_texts_per_request,
        ") must not exceed --max_queued_texts (", options.batching.max_queued_texts, ")"));
  }
  if (absl::Status s = CheckTlsFlags(options.tls); !s.ok()) return s;
  if (options.api_keys_reload_interval != absl::ZeroDuration() &&
      (options.api_keys_reload_interval < absl::Seconds(1) ||
       options.api_keys_reload_interval == absl::InfiniteDuration())) {
    return absl::InvalidArgumentError("--api_keys_reload_seconds must be 0 (never) or at least 1");
  }
  if (options.max_connection_age > absl::ZeroDuration() &&
      options.max_connection_age < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--max_connection_age_seconds must be 0 (never) or at least 1");
  }
  if (options.limits.max_beam_size > 16) {
    return absl::InvalidArgumentError("--max_beam_size: the engine supports at most 16");
  }
  return options;
}

ComputeType ComputeTypeFor(const DaemonOptions& options, const std::string& name) {
  auto it = options.model_compute_types.find(name);
  return it != options.model_compute_types.end() ? it->second : options.compute_type;
}

}  // namespace rosetta::server
