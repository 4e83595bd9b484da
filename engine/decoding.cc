#include "engine/decoding.h"

// GCC 12's AVX-512 headers trip -Wuninitialized on their own undefined registers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "engine/cpu_features.h"
#include "engine/ops.h"

namespace rosetta {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Beams beyond this cost more than they gain for translation; also bounds per-step work.
constexpr int kMaxBeamSize = 16;

struct Candidate {
  float score;
  int beam;
  int token;
};

// Better candidates first; ties go to the lower beam, then the lower token.
bool Better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

// Inserts row[v] as a candidate of `beam` into the sorted (best first) tail [first, end) of `out`
// that holds at most k entries.
inline void InsertCandidate(const float* row, int v, int beam, size_t first, size_t k,
                            std::vector<Candidate>& out) {
  const float score = row[v];
  if (out.size() - first == k) {
    if (!(score > out.back().score)) return;
    out.back() = Candidate{score, beam, v};
  } else {
    out.push_back(Candidate{score, beam, v});
  }
  for (size_t i = out.size() - 1; i > first && Better(out[i], out[i - 1]); --i) {
    std::swap(out[i], out[i - 1]);
  }
}

// The scan of AppendTopK: 16 values at a time, skipping the chunks where none beats the current
// k-th best (nearly all of a 32,000-token vocabulary once k candidates are kept).
__attribute__((target("avx512f"))) void ScanTopKAvx512(const float* row, int n, size_t k, int beam,
                                                       size_t first, std::vector<Candidate>& out) {
  int v = 0;
  for (; v + 16 <= n; v += 16) {
    const float threshold = out.size() - first == k ? out.back().score : kNegInf;
    __mmask16 mask = _mm512_cmp_ps_mask(_mm512_loadu_ps(row + v), _mm512_set1_ps(threshold),
                                        _CMP_GT_OQ);  // false for NaN and for -inf rows
    while (mask != 0) {
      const int lane = __builtin_ctz(mask);
      mask &= mask - 1;
      InsertCandidate(row, v + lane, beam, first, k, out);
    }
  }
  for (; v < n; ++v) {
    if (row[v] > kNegInf) InsertCandidate(row, v, beam, first, k, out);
  }
}

// Appends the best `k` finite entries of `row` to `out` as candidates of `beam` (score: the
// entry itself). -inf and NaN entries never become candidates.
void AppendTopK(const float* row, int n, int k, int beam, std::vector<Candidate>& out) {
  const size_t first = out.size();
  if (UseAvx512()) {
    ScanTopKAvx512(row, n, static_cast<size_t>(k), beam, first, out);
  } else {
    for (int v = 0; v < n; ++v) {
      if (row[v] > kNegInf) InsertCandidate(row, v, beam, first, static_cast<size_t>(k), out);
    }
  }
}

float NormalizedScore(float log_prob, size_t length, float length_penalty) {
  if (length == 0 || length_penalty == 0.0f) return log_prob;
  return log_prob / std::pow(static_cast<float>(length), length_penalty);
}

}  // namespace

absl::Status ValidateDecodingOptions(const DecodingOptions& o, int max_length_cap) {
  if (o.beam_size < 1 || o.beam_size > kMaxBeamSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("beam_size must be between 1 and ", kMaxBeamSize, ", got ", o.beam_size));
  }
  if (o.num_hypotheses < 1 || o.num_hypotheses > o.beam_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_hypotheses must be between 1 and beam_size (", o.beam_size, "), got ",
                     o.num_hypotheses));
  }
  if (o.max_length < 1 || o.max_length > max_length_cap) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length must be between 1 and ", max_length_cap, ", got ", o.max_length));
  }
  if (o.min_length < 0 || o.min_length > o.max_length) {
    return absl::InvalidArgumentError(absl::StrCat("min_length must be between 0 and max_length (",
                                                   o.max_length, "), got ", o.min_length));
  }
  if (!std::isfinite(o.length_penalty) || o.length_penalty < 0.0f || o.length_penalty > 10.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("length_penalty must be between 0 and 10, got ", o.length_penalty));
  }
  return absl::OkStatus();
}

struct DecodingBatch::Beam {
  std::vector<int32_t> tokens;   // generated so far, no EOS
  std::vector<int64_t> history;  // cache row offsets of steps 0..step
  float log_prob = 0.0f;
  // Log-normaliser of this beam's logits at the current step (see LogSoftmaxNormalizer).
  float row_max = 0.0f;
  float row_log_sum = 0.0f;
};

struct DecodingBatch::Group {
  SequenceId id = 0;
  DecodingOptions options;
  int source_length = 0;
  AlignedVector<float> cross_memory;
  std::vector<int> slots;  // one cache slot per beam lane
  std::vector<Beam> beams;
  std::vector<Beam> next_beams;  // reused between steps
  std::vector<Hypothesis> finished;
  int step = 0;  // tokens generated so far
  int first_row = 0;
};

DecodingBatch::DecodingBatch(std::shared_ptr<const TransformerModel> model,
                             const DecodingBatchOptions& options)
    : model_(std::move(model)),
      options_(options),
      cache_(DecoderCache::Options{static_cast<int>(model_->decoder_layers.size()),
                                   model_->config.d_model, options.cache_page_steps,
                                   options.cache_pages}),
      pool_(std::make_unique<ThreadPool>(std::max(1, options.num_threads))) {
  workspace_.set_pool(pool_.get());
}

DecodingBatch::~DecodingBatch() = default;

int DecodingBatch::PagesFor(const DecodingOptions& options) const {
  return options.beam_size * cache_.PagesForSteps(options.max_length);
}

bool DecodingBatch::CanAdmit(const DecodingOptions& options) const {
  return reserved_beams_ + options.beam_size <= options_.max_beams &&
         PagesFor(options) <= cache_.free_pages();
}

int DecodingBatch::num_beams() const {
  int beams = 0;
  for (const auto& group : groups_) beams += static_cast<int>(group->beams.size());
  return beams;
}

absl::Status DecodingBatch::ValidateSource(const std::vector<int32_t>& ids) const {
  if (ids.empty()) return absl::InvalidArgumentError("the source has no tokens");
  const EmbeddingWeights& embeddings = model_->encoder_embeddings;
  for (int32_t id : ids) {
    if (id < 0 || id >= embeddings.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("source token id ", id,
                                                     " is outside the vocabulary of ",
                                                     embeddings.vocab_size, " tokens"));
    }
  }
  if (embeddings.positions != nullptr && static_cast<int>(ids.size()) > embeddings.max_positions) {
    return absl::InvalidArgumentError(absl::StrCat("the source has ", ids.size(),
                                                   " tokens; this model accepts at most ",
                                                   embeddings.max_positions));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DecodingBatch::SequenceId>> DecodingBatch::Admit(
    std::span<const Request> requests) {
  const int max_target = model_->decoder_embeddings.positions != nullptr
                             ? model_->decoder_embeddings.max_positions
                             : std::numeric_limits<int>::max();
  int beams = 0;
  int pages = 0;
  std::vector<int32_t> ids;
  std::vector<int> offsets = {0};
  for (const Request& request : requests) {
    if (absl::Status s = ValidateDecodingOptions(request.options, max_target); !s.ok()) return s;
    if (absl::Status s = ValidateSource(request.source_ids); !s.ok()) return s;
    beams += request.options.beam_size;
    pages += PagesFor(request.options);
    ids.insert(ids.end(), request.source_ids.begin(), request.source_ids.end());
    offsets.push_back(static_cast<int>(ids.size()));
  }
  if (reserved_beams_ + beams > options_.max_beams || pages > cache_.free_pages()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the running batch cannot take ", requests.size(), " more sentences (", beams, " beams, ",
        pages, " cache pages; free: ", options_.max_beams - reserved_beams_, " beams, ",
        cache_.free_pages(), " pages)"));
  }
  if (requests.empty()) return std::vector<SequenceId>{};

  const int d = model_->config.d_model;
  encoder_output_.resize(ids.size() * static_cast<size_t>(d));
  RunEncoder(*model_, ids, offsets, workspace_, encoder_output_.data());

  std::vector<SequenceId> admitted;
  std::vector<float*> memories;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto group = std::make_unique<Group>();
    group->id = next_id_++;
    group->options = requests[i].options;
    group->source_length = offsets[i + 1] - offsets[i];
    if (!spare_memories_.empty()) {
      group->cross_memory = std::move(spare_memories_.back());
      spare_memories_.pop_back();
    }
    group->cross_memory.resize(CrossMemoryFloats(*model_, group->source_length));
    memories.push_back(group->cross_memory.data());
    for (int lane = 0; lane < group->options.beam_size; ++lane) {
      group->slots.push_back(*cache_.AcquireSlot(group->options.max_length));
    }
    Beam start;
    start.tokens.reserve(group->options.max_length);
    start.history.reserve(group->options.max_length);
    group->beams.push_back(std::move(start));
    reserved_beams_ += group->options.beam_size;
    admitted.push_back(group->id);
    groups_.push_back(std::move(group));
  }
  ComputeCrossMemory(*model_, encoder_output_.data(), offsets, memories, workspace_);
  return admitted;
}

void DecodingBatch::ReleaseGroup(Group& group) {
  for (int slot : group.slots) cache_.ReleaseSlot(slot);
  group.slots.clear();
  reserved_beams_ -= group.options.beam_size;
  // Kept for the next admitted sentence: no allocation and page faults per sentence. At most one
  // per beam the batch can run; each keeps the size of the longest source it held (at most the
  // source length limit), so this is bounded by max_beams memories of the longest source.
  if (spare_memories_.size() < static_cast<size_t>(options_.max_beams)) {
    spare_memories_.push_back(std::move(group.cross_memory));
  }
}

bool DecodingBatch::Cancel(SequenceId id) {
  for (auto it = groups_.begin(); it != groups_.end(); ++it) {
    if ((*it)->id == id) {
      ReleaseGroup(**it);
      groups_.erase(it);
      return true;
    }
  }
  return false;
}

const std::vector<int32_t>* DecodingBatch::BestTokens(SequenceId id) const {
  for (const auto& group : groups_) {
    if (group->id == id) return group->beams.empty() ? nullptr : &group->beams.front().tokens;
  }
  return nullptr;
}

std::vector<DecodingBatch::Finished> DecodingBatch::Step() {
  std::vector<Finished> done;
  if (groups_.empty()) return done;
  const TransformerConfig& config = model_->config;

  rows_.clear();
  for (auto& group : groups_) {
    group->first_row = static_cast<int>(rows_.size());
    for (size_t lane = 0; lane < group->beams.size(); ++lane) {
      Beam& beam = group->beams[lane];
      const int slot = group->slots[lane];
      cache_.PrepareStep(slot, group->step);
      beam.history.push_back(cache_.RowOffset(slot, group->step));
      DecoderRow row;
      row.token = beam.tokens.empty() ? config.decoder_start_id : beam.tokens.back();
      row.step = group->step;
      row.history = beam.history.data();
      row.cross_memory = group->cross_memory.data();
      row.source_length = group->source_length;
      rows_.push_back(row);
    }
  }

  const int vocab = model_->target_vocab_size();
  const int num_rows = static_cast<int>(rows_.size());
  float* logits =
      workspace_.Get(Workspace::kFirstCallerBuffer, static_cast<size_t>(num_rows) * vocab);
  RunDecoderStep(*model_, rows_, cache_, workspace_, logits);
  // Per sentence: log-probabilities of its beams, then the choice of its next beams. Sentences
  // are independent, so they are spread over the threads.
  std::vector<char> group_done(groups_.size(), 0);
  auto advance = [&](int g) {
    Group& group = *groups_[g];
    float* group_logits = logits + static_cast<int64_t>(group.first_row) * vocab;
    const int rows = static_cast<int>(group.beams.size());
    // Log-probabilities are logits minus the row's normaliser; only the selected candidates are
    // converted. Masking after normalising keeps the masked tokens' mass in the normaliser.
    for (int r = 0; r < rows; ++r) {
      float* row = group_logits + static_cast<int64_t>(r) * vocab;
      LogSoftmaxNormalizer(row, vocab, &group.beams[r].row_max, &group.beams[r].row_log_sum);
      for (int id : config.suppressed_ids) row[id] = kNegInf;
      if (group.step < group.options.min_length) row[config.eos_id] = kNegInf;
    }
    group_done[g] = AdvanceGroup(group, group_logits);
  };
  const int num_groups = static_cast<int>(groups_.size());
  pool_->ParallelFor(num_groups, [&](int begin, int end) {
    for (int g = begin; g < end; ++g) advance(g);
  });

  size_t kept = 0;
  for (size_t g = 0; g < groups_.size(); ++g) {
    Group& group = *groups_[g];
    if (group_done[g]) {
      Finished finished;
      finished.id = group.id;
      finished.steps = group.step;
      std::stable_sort(group.finished.begin(), group.finished.end(),
                       [](const Hypothesis& a, const Hypothesis& b) { return a.score > b.score; });
      const size_t keep = std::min<size_t>(group.options.num_hypotheses, group.finished.size());
      finished.hypotheses.assign(std::make_move_iterator(group.finished.begin()),
                                 std::make_move_iterator(group.finished.begin() + keep));
      done.push_back(std::move(finished));
      ReleaseGroup(group);
    } else {
      groups_[kept++] = std::move(groups_[g]);
    }
  }
  groups_.resize(kept);
  return done;
}

bool DecodingBatch::AdvanceGroup(Group& group, const float* logits) {
  const int vocab = model_->target_vocab_size();
  const int eos = model_->config.eos_id;
  const DecodingOptions& options = group.options;
  const int k = options.beam_size;

  std::vector<Candidate> candidates;
  candidates.reserve(static_cast<size_t>(2 * k) * group.beams.size());
  for (size_t b = 0; b < group.beams.size(); ++b) {
    const Beam& beam = group.beams[b];
    const size_t first = candidates.size();
    AppendTopK(logits + static_cast<int64_t>(b) * vocab, vocab, 2 * k, static_cast<int>(b),
               candidates);
    for (size_t i = first; i < candidates.size(); ++i) {
      const float log_prob = (candidates[i].score - beam.row_max) - beam.row_log_sum;
      candidates[i].score = beam.log_prob + log_prob;
    }
  }
  std::sort(candidates.begin(), candidates.end(), Better);
  if (candidates.size() > static_cast<size_t>(2 * k)) candidates.resize(2 * k);

  group.next_beams.resize(0);
  for (size_t rank = 0; rank < candidates.size(); ++rank) {
    const Candidate& c = candidates[rank];
    const Beam& parent = group.beams[c.beam];
    if (c.token == eos) {
      if (rank < static_cast<size_t>(k)) {
        group.finished.push_back({parent.tokens, NormalizedScore(c.score, parent.tokens.size() + 1,
                                                                 options.length_penalty)});
      }
      continue;
    }
    group.next_beams.emplace_back();
    Beam& beam = group.next_beams.back();
    beam.tokens.reserve(options.max_length);
    beam.history.reserve(options.max_length);
    beam.tokens = parent.tokens;
    beam.tokens.push_back(c.token);
    beam.history = parent.history;
    beam.log_prob = c.score;
    if (group.next_beams.size() == static_cast<size_t>(k)) break;
  }
  std::swap(group.beams, group.next_beams);
  ++group.step;

  if (group.finished.size() >= static_cast<size_t>(k) || group.beams.empty()) return true;
  if (group.step >= options.max_length) {
    for (Beam& beam : group.beams) {
      group.finished.push_back({beam.tokens, NormalizedScore(beam.log_prob, beam.tokens.size(),
                                                             options.length_penalty)});
    }
    return true;
  }
  return false;
}

DecodingBatchOptions StaticBatchOptions(int sentences, const DecodingOptions& options,
                                        int num_threads) {
  DecodingBatchOptions batch_options;
  batch_options.num_threads = num_threads;
  batch_options.max_beams = std::max(1, sentences * options.beam_size);
  const int steps_per_page = batch_options.cache_page_steps;
  const int pages_per_beam =
      (std::max(options.max_length, 1) + steps_per_page - 1) / steps_per_page;
  batch_options.cache_pages = batch_options.max_beams * pages_per_beam;
  return batch_options;
}

absl::StatusOr<std::vector<std::vector<Hypothesis>>> TranslateBatch(
    std::shared_ptr<const TransformerModel> model, const std::vector<std::vector<int32_t>>& sources,
    const DecodingOptions& options, int num_threads) {
  DecodingBatch batch(std::move(model),
                      StaticBatchOptions(static_cast<int>(sources.size()), options, num_threads));

  std::vector<DecodingBatch::Request> requests;
  requests.reserve(sources.size());
  for (const auto& source : sources) requests.push_back({source, options});
  absl::StatusOr<std::vector<DecodingBatch::SequenceId>> ids = batch.Admit(requests);
  if (!ids.ok()) return ids.status();

  std::unordered_map<DecodingBatch::SequenceId, size_t> index;
  for (size_t i = 0; i < ids->size(); ++i) index[(*ids)[i]] = i;
  std::vector<std::vector<Hypothesis>> results(sources.size());
  while (!batch.empty()) {
    for (DecodingBatch::Finished& finished : batch.Step()) {
      results[index[finished.id]] = std::move(finished.hypotheses);
    }
  }
  return results;
}

}  // namespace rosetta
