// Target tokens per second of batched translation, the workload of docs/BENCHMARKS.md: N source
// sentences of S random tokens, output length forced to T tokens (min = max = T), translated in
// static batches of B sentences with beam K. Prints one JSON line per (B, K).
//
//   translate_bench --model DIR [--sentences 512] [--batch_sizes 1,8,32] [--beams 1,4]
#include <chrono>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/blas.h"
#include "engine/decoding.h"
#include "engine/model_loader.h"

ABSL_FLAG(std::string, model, "", "Model directory.");
ABSL_FLAG(int, sentences, 512, "Source sentences per configuration.");
ABSL_FLAG(int, batch1_sentences, 64, "Source sentences at batch size 1 (slow).");
ABSL_FLAG(int, source_length, 25, "Tokens per source sentence, EOS included.");
ABSL_FLAG(int, target_length, 25, "Generated tokens per sentence (min = max length).");
ABSL_FLAG(std::string, batch_sizes, "1,8,32", "Batch sizes.");
ABSL_FLAG(std::string, beams, "1,4", "Beam sizes.");
ABSL_FLAG(int, threads, 2, "Threads.");
ABSL_FLAG(rosetta::ComputeType, compute_type, rosetta::ComputeType::kFloat32,
          "How the linear layers multiply: float32, bfloat16 (CPUs with AVX512_BF16) or int8 "
          "(CPUs with AVX512_VNNI).");
ABSL_FLAG(int, seed, 1234, "Seed of the random source tokens.");

namespace {

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    values.push_back(std::stoi(std::string(item)));
  }
  return values;
}

int Run() {
  // The engine runs its own threads and splits the GEMMs among them.
  rosetta::SetBlasThreads(1);
  auto model = rosetta::LoadTranslationModel(absl::GetFlag(FLAGS_model),
                                             {.compute_type = absl::GetFlag(FLAGS_compute_type)});
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  const rosetta::TransformerConfig& config = (*model)->transformer->config;
  const int vocab = (*model)->transformer->source_vocab_size();
  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  // Ordinary tokens only: not EOS, padding, the decoder start or <unk>.
  std::uniform_int_distribution<int> token(0, vocab - 1);
  auto ordinary = [&]() {
    for (;;) {
      const int id = token(rng);
      if (id != config.eos_id && id != config.pad_id && id != config.decoder_start_id &&
          id != (*model)->source_unk_id) {
        return id;
      }
    }
  };
  const int source_length = absl::GetFlag(FLAGS_source_length);
  std::vector<std::vector<int32_t>> sources(absl::GetFlag(FLAGS_sentences));
  for (auto& source : sources) {
    for (int i = 0; i + 1 < source_length; ++i) source.push_back(ordinary());
    source.push_back(config.eos_id);
  }

  for (int beam : ParseList(absl::GetFlag(FLAGS_beams))) {
    for (int batch : ParseList(absl::GetFlag(FLAGS_batch_sizes))) {
      rosetta::DecodingOptions options;
      options.beam_size = beam;
      options.min_length = options.max_length = absl::GetFlag(FLAGS_target_length);
      const int count = batch == 1
                            ? std::min<int>(absl::GetFlag(FLAGS_batch1_sentences), sources.size())
                            : static_cast<int>(sources.size());
      // One running batch for the whole configuration, as the daemon's worker keeps one: its
      // cache, scratch buffers and threads are allocated once, not per chunk.
      rosetta::DecodingBatch running(
          (*model)->transformer,
          rosetta::StaticBatchOptions(batch, options, absl::GetFlag(FLAGS_threads)));
      int64_t target_tokens = 0;
      const auto start = std::chrono::steady_clock::now();
      for (int first = 0; first < count; first += batch) {
        // Static batches: admit a chunk, decode it to the end, then the next.
        std::vector<rosetta::DecodingBatch::Request> requests;
        for (int i = first; i < std::min(first + batch, count); ++i) {
          requests.push_back({sources[i], options});
        }
        if (auto admitted = running.Admit(requests); !admitted.ok()) {
          std::cerr << admitted.status() << "\n";
          return 1;
        }
        while (!running.empty()) {
          for (const auto& finished : running.Step()) {
            target_tokens += finished.hypotheses[0].tokens.size();
          }
        }
      }
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cout << absl::StrFormat(
                       "{\"impl\": \"rosetta\", \"batch\": %d, \"beam\": %d, \"sentences\": %d, "
                       "\"target_tokens\": %d, \"seconds\": %.3f, \"tokens_per_second\": %.1f, "
                       "\"blas\": \"%s\", \"threads\": %d}",
                       batch, beam, count, target_tokens, seconds, target_tokens / seconds,
                       rosetta::BlasCoreName(), absl::GetFlag(FLAGS_threads))
                << std::endl;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  absl::ParseCommandLine(argc, argv);
  return Run();
}
