// Sentences per second of sentence embeddings (issue 3's workload in docs/BENCHMARKS.md): N texts
// of L tokens ([CLS], L - 2 random ordinary pieces, [SEP]) embedded in batches of B through
// EmbeddingModel::Embed (pooling and normalisation included). Prints one JSON line per batch size,
// with the process's CPU seconds besides the wall time.
//
//   embedding_bench --model DIR [--texts 256] [--length 32] [--batch_sizes 1,32] [--threads 2]
#include <time.h>

#include <algorithm>
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
#include "engine/embedding_model.h"

ABSL_FLAG(std::string, model, "", "Embedding model directory.");
ABSL_FLAG(int, texts, 256, "Texts per configuration.");
ABSL_FLAG(int, length, 32, "Ids per text, [CLS] and [SEP] included.");
ABSL_FLAG(std::string, batch_sizes, "1,32", "Batch sizes.");
ABSL_FLAG(int, threads, 2, "Threads.");
ABSL_FLAG(rosetta::ComputeType, compute_type, rosetta::ComputeType::kFloat32,
          "How the linear layers multiply: float32, bfloat16 (CPUs with AVX512_BF16) or int8 "
          "(CPUs with AVX512_VNNI).");
ABSL_FLAG(int, seed, 1234, "Seed of the random pieces.");

namespace {

// CPU time of every thread of the process: on a shared machine, a steadier measure of the work
// done than wall time (which counts the time other processes hold the cores), though it also
// counts the pool's spinning.
double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int Run() {
  rosetta::SetBlasThreads(1);  // the engine splits GEMMs over its own threads
  auto model = rosetta::LoadEmbeddingModel(absl::GetFlag(FLAGS_model),
                                           {.compute_type = absl::GetFlag(FLAGS_compute_type)});
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  absl::StatusOr<std::vector<int32_t>> specials = (*model)->Tokenize("", false, nullptr);
  if (!specials.ok()) {
    std::cerr << specials.status() << "\n";
    return 1;
  }
  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  // BERT vocabularies keep their special and unused pieces below 1000.
  std::uniform_int_distribution<int> piece(1000, (*model)->vocabulary_size() - 1);
  const int length = absl::GetFlag(FLAGS_length);
  std::vector<std::vector<int32_t>> texts(absl::GetFlag(FLAGS_texts));
  for (auto& text : texts) {
    text.push_back(specials->front());
    for (int i = 0; i + 2 < length; ++i) text.push_back(piece(rng));
    text.push_back(specials->back());
  }
  rosetta::ThreadPool pool(absl::GetFlag(FLAGS_threads));
  rosetta::Workspace workspace;
  workspace.set_pool(&pool);
  std::vector<float> out;
  for (absl::string_view item : absl::StrSplit(absl::GetFlag(FLAGS_batch_sizes), ',')) {
    const int batch = std::stoi(std::string(item));
    out.resize(static_cast<size_t>(batch) * (*model)->dimension());
    auto run_batch = [&](int first) {
      const int count = std::min<int>(batch, texts.size() - first);
      (*model)->Embed(std::span(texts).subspan(first, count), workspace, out.data());
    };
    run_batch(0);  // warm-up: workspace buffers, page faults
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = ProcessCpuSeconds();
    for (int first = 0; first < static_cast<int>(texts.size()); first += batch) run_batch(first);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu_seconds = ProcessCpuSeconds() - cpu_start;
    std::cout << absl::StrFormat(
        "{\"impl\": \"rosetta\", \"batch\": %d, \"length\": %d, \"texts\": %d, \"seconds\": %.4f, "
        "\"sentences_per_second\": %.1f, \"cpu_seconds\": %.4f}\n",
        batch, length, texts.size(), seconds, texts.size() / seconds, cpu_seconds);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  absl::ParseCommandLine(argc, argv);
  return Run();
}
