// rosetta-translate: translates lines from stdin with a model directory, one output line per input.
//
//   rosetta-translate --model DIR [--beam_size 2] [--max_length 256] < input.txt
//
// CTranslate2 models take space-separated tokens (they come without a tokenizer); Marian models
// take plain text.
#include <sys/stat.h>

#include <chrono>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "engine/blas.h"
#include "engine/decoding.h"
#include "engine/model_loader.h"
#include "hub/hub_model.h"

ABSL_FLAG(
    std::string, model, "",
    "Model directory (CTranslate2 or Hugging Face MarianMT), or a Hub id org/name[@revision].");
ABSL_FLAG(int, beam_size, -1, "Beam size; 1 is greedy search. Default: the model's.");
ABSL_FLAG(float, length_penalty, 1.0f, "Score = log-prob / length^length_penalty.");
ABSL_FLAG(int, max_length, 256, "Maximum generated tokens, EOS included.");
ABSL_FLAG(int, min_length, 0, "Minimum generated tokens before EOS.");
ABSL_FLAG(int, num_hypotheses, 1, "Hypotheses printed per input, best first, tab-separated.");
ABSL_FLAG(bool, scores, false, "Print each hypothesis' score before it (score ||| text).");
ABSL_FLAG(int, batch_size, 32, "Sentences translated together.");
ABSL_FLAG(int, threads, 0, "Threads; 0 keeps OpenBLAS's default (the CPUs available).");
ABSL_FLAG(rosetta::ComputeType, compute_type, rosetta::ComputeType::kFloat32,
          "How the linear layers multiply: float32, bfloat16 (CPUs with AVX512_BF16) or int8 "
          "(CPUs with AVX512_VNNI).");

namespace {

int Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) {
    std::cerr << "rosetta-translate: --model is required\n";
    return 2;
  }
  // OpenBLAS's default is the CPUs this process may use; the engine takes over the threading and
  // splits the GEMMs among its own threads.
  const int threads =
      absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads) : rosetta::GetBlasThreads();
  rosetta::SetBlasThreads(1);
  const auto start = std::chrono::steady_clock::now();
  std::string path = dir;
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (std::optional<rosetta::hub::HubModelId> id = rosetta::hub::ParseHubModelId(dir)) {
      rosetta::hub::HubOptions hub = rosetta::hub::HubOptionsFromEnvironment();
      hub.log = [](const std::string& line) { std::cerr << "rosetta-translate: " << line << "\n"; };
      absl::StatusOr<std::string> fetched = rosetta::hub::FetchHubModel(*id, hub);
      if (!fetched.ok()) {
        std::cerr << "rosetta-translate: " << fetched.status().message() << "\n";
        return 1;
      }
      path = *fetched;
    }
  }
  absl::StatusOr<std::unique_ptr<rosetta::TranslationModel>> model =
      rosetta::LoadTranslationModel(path, {.compute_type = absl::GetFlag(FLAGS_compute_type)});
  if (!model.ok()) {
    std::cerr << "rosetta-translate: " << model.status().message() << "\n";
    return 1;
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << absl::StrFormat(
      "rosetta-translate: loaded %s (%s, %s weights, computing in %s) in %.2f s; BLAS: %s, %d "
      "threads\n",
      dir, (*model)->transformer->config.architecture, (*model)->transformer->config.weight_type,
      rosetta::ComputeTypeName((*model)->transformer->config.compute_type), load_seconds,
      rosetta::BlasCoreName(), threads);

  rosetta::DecodingOptions options = (*model)->default_options;
  if (absl::GetFlag(FLAGS_beam_size) > 0) options.beam_size = absl::GetFlag(FLAGS_beam_size);
  options.length_penalty = absl::GetFlag(FLAGS_length_penalty);
  options.max_length = absl::GetFlag(FLAGS_max_length);
  options.min_length = absl::GetFlag(FLAGS_min_length);
  options.num_hypotheses = absl::GetFlag(FLAGS_num_hypotheses);
  if (absl::Status s = rosetta::ValidateDecodingOptions(options, 1 << 20); !s.ok()) {
    std::cerr << "rosetta-translate: " << s.message() << "\n";
    return 2;
  }

  const int batch_size = std::max(1, absl::GetFlag(FLAGS_batch_size));
  std::vector<std::string> lines;
  bool failed = false;
  auto flush = [&]() {
    std::vector<std::vector<int32_t>> sources;
    std::vector<int> line_index;  // input line -> source index, -1 for lines that failed
    std::vector<std::string> errors(lines.size());
    for (size_t i = 0; i < lines.size(); ++i) {
      absl::StatusOr<std::vector<int32_t>> ids = (*model)->EncodeText(lines[i]);
      if (ids.ok() && ids->empty()) ids = absl::InvalidArgumentError("the line has no tokens");
      if (!ids.ok()) {
        errors[i] = std::string(ids.status().message());
        line_index.push_back(-1);
        continue;
      }
      line_index.push_back(static_cast<int>(sources.size()));
      sources.push_back(std::move(*ids));
    }
    absl::StatusOr<std::vector<std::vector<rosetta::Hypothesis>>> results =
        rosetta::TranslateBatch((*model)->transformer, sources, options, threads);
    if (!results.ok()) {
      std::cerr << "rosetta-translate: " << results.status().message() << "\n";
      failed = true;
      return;
    }
    for (size_t i = 0; i < lines.size(); ++i) {
      if (line_index[i] < 0) {
        std::cerr << "rosetta-translate: line skipped: " << errors[i] << "\n";
        std::cout << "\n";
        failed = true;
        continue;
      }
      const auto& hypotheses = (*results)[line_index[i]];
      for (size_t h = 0; h < hypotheses.size(); ++h) {
        if (h > 0) std::cout << "\t";
        if (absl::GetFlag(FLAGS_scores))
          std::cout << absl::StrFormat("%.6f ||| ", hypotheses[h].score);
        std::cout << (*model)->DecodeText(hypotheses[h].tokens);
      }
      std::cout << "\n";
    }
    std::cout.flush();
    lines.clear();
  };
  std::string line;
  while (std::getline(std::cin, line)) {
    lines.push_back(line);
    if (static_cast<int>(lines.size()) == batch_size) flush();
  }
  if (!lines.empty()) flush();
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Translates lines from stdin: rosetta-translate --model DIR < input");
  rosetta::SelectOpenBlasKernels(argv);
  absl::ParseCommandLine(argc, argv);
  return Run();
}
