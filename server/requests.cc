#include "server/requests.h"

#include <algorithm>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/decoding.h"

namespace rosetta::server {

namespace {

// Bytes allowed per token before tokenizing: bounds the work spent on a text that will be refused.
constexpr int64_t kMaxBytesPerToken = 64;

// The start of `text` up to a token boundary at or after byte `bytes`: ASCII whitespace (and, for
// `at_punctuation`, ASCII punctuation, where BERT's tokenizer splits too) within the next 1 KiB;
// failing that, a character boundary (a word of over 1 KiB is cut).
absl::string_view PrefixAtBoundary(absl::string_view text, size_t bytes, bool at_punctuation) {
  if (text.size() <= bytes) return text;
  const size_t end = std::min(text.size(), bytes + 1024);
  for (size_t i = bytes; i < end; ++i) {
    const unsigned char c = text[i];
    if (absl::ascii_isspace(c) || (at_punctuation && absl::ascii_ispunct(c))) {
      return text.substr(0, i);
    }
  }
  size_t i = bytes;
  while (i > 0 && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) --i;
  return text.substr(0, i);
}

// `tokenize(text)`, or when `truncate`, `tokenize` of prefixes of `text` that end at a token
// boundary (PrefixAtBoundary), from `bytes` and doubling, until one is `enough` or is the whole
// text: the tokens kept are the whole text's first ones, at a cost set by them, not by the text.
template <typename Tokenize, typename Enough>
auto TokenizeLeading(absl::string_view text, size_t bytes, bool truncate, bool at_punctuation,
                     const Tokenize& tokenize, const Enough& enough) {
  for (;; bytes *= 2) {
    const absl::string_view part = truncate ? PrefixAtBoundary(text, bytes, at_punctuation) : text;
    auto result = tokenize(part);
    if (!result.ok() || part.size() == text.size() || enough(*result)) return result;
  }
}

// The shared part of both requests: count, then each input is valid and within the limits.
// `max_tokens` >= 0 cuts inputs to that many tokens instead of failing.
template <typename Request>
absl::StatusOr<std::vector<std::vector<int32_t>>> TokenizeInputs(const Request& request,
                                                                 const ServedModel& served,
                                                                 const RequestLimits& limits,
                                                                 bool truncate,
                                                                 std::vector<bool>* truncated) {
  const bool has_texts = request.texts_size() > 0;
  const bool has_tokens = request.tokenized_size() > 0;
  if (has_texts && has_tokens) {
    return absl::InvalidArgumentError("texts and tokenized are both set: send one of them");
  }
  if (!has_texts && !has_tokens) {
    return absl::InvalidArgumentError("no inputs: set texts or tokenized");
  }
  const std::string field = has_texts ? "texts" : "tokenized";
  const int count = has_texts ? request.texts_size() : request.tokenized_size();
  if (count > limits.max_texts_per_request) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", count, " inputs; the limit is ",
                                                   limits.max_texts_per_request,
                                                   " (max_texts_per_request)"));
  }
  if (has_tokens && !served.translates()) {
    return absl::InvalidArgumentError(
        "tokenized inputs are for translation models (their source vocabulary); this model "
        "takes texts");
  }
  const int max_tokens = served.max_tokens_per_text;
  const int64_t max_bytes = kMaxBytesPerToken * max_tokens;
  std::vector<std::vector<int32_t>> inputs;
  inputs.reserve(count);
  int64_t total_tokens = 0;
  // Keeps an input's ids, within the request's token limit.
  auto add = [&](const std::string& name, std::vector<int32_t> ids, bool cut) -> absl::Status {
    total_tokens += static_cast<int64_t>(ids.size());
    if (total_tokens > limits.max_tokens_per_request) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request has more than ", limits.max_tokens_per_request,
                       " tokens (max_tokens_per_request), counted up to ", name));
    }
    if (truncated != nullptr) truncated->push_back(cut);
    inputs.push_back(std::move(ids));
    return absl::OkStatus();
  };
  for (int i = 0; i < count; ++i) {
    const std::string name = absl::StrCat(field, "[", i, "]");
    std::vector<std::string> tokens;
    bool cut = false;  // tokens were dropped
    if (has_texts) {
      const std::string& text = request.texts(i);
      // A text to be cut is tokenized from its start only (TokenizeLeading).
      if (!truncate && static_cast<int64_t>(text.size()) > max_bytes) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is ", text.size(), " bytes; the limit is ", max_bytes, " (",
                         kMaxBytesPerToken, " x max_tokens_per_text ", max_tokens, ")"));
      }
      if (const int64_t bad = InvalidUtf8Offset(text); bad >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " is not valid UTF-8 (at byte ", bad, ")"));
      }
      if (!served.translates()) {
        // The embedding model's own tokenizer (WordPiece, ...) with its special tokens.
        bool cut = false;
        absl::StatusOr<std::vector<int32_t>> ids = TokenizeLeading(
            text, max_bytes, truncate, /*at_punctuation=*/true,
            [&](absl::string_view part) {
              return served.embedder->Tokenize(part, /*truncate=*/true, &cut);
            },
            [&](const std::vector<int32_t>& got) {
              return cut || static_cast<int>(got.size()) > max_tokens;
            });
        if (!ids.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(name, ": ", ids.status().message()));
        }
        if ((cut || static_cast<int>(ids->size()) > max_tokens) && !truncate) {
          return absl::InvalidArgumentError(absl::StrCat(name, " has more than ", max_tokens,
                                                         " tokens; the limit is ", max_tokens,
                                                         " (max_tokens_per_text)"));
        }
        if (static_cast<int>(ids->size()) > max_tokens) {
          // The daemon's limit is below the model's own: cut the text's tokens, keep the final
          // special token ([SEP]) as the model's own truncation does.
          ids->erase(ids->begin() + (max_tokens - 1), ids->end() - 1);
          cut = true;
        }
        if (absl::Status s = add(name, std::move(*ids), cut); !s.ok()) return s;
        continue;
      }
      const TranslationModel& model = *served.model;
      // SentencePiece's pieces may hold punctuation, never whitespace.
      absl::StatusOr<std::vector<std::string>> pieces = TokenizeLeading(
          text, max_bytes, truncate, /*at_punctuation=*/false,
          [&](absl::string_view part) { return model.codec->Tokenize(part); },
          [&](const std::vector<std::string>& got) {
            return static_cast<int>(got.size()) > max_tokens;
          });
      if (!pieces.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": ", pieces.status().message()));
      }
      tokens = std::move(*pieces);
      if (tokens.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(name, " is empty (no tokens)"));
      }
    } else {
      const auto& list = request.tokenized(i).tokens();
      if (list.empty()) return absl::InvalidArgumentError(absl::StrCat(name, " has no tokens"));
      if (list.size() > max_tokens && !truncate) {
        return absl::InvalidArgumentError(absl::StrCat(name, " has ", list.size(),
                                                       " tokens; the limit is ", max_tokens,
                                                       " (max_tokens_per_text)"));
      }
      // When cutting, only the tokens that can be kept are looked at.
      const int kept = truncate ? std::min(list.size(), max_tokens) : list.size();
      cut = kept < list.size();
      for (int t = 0; t < kept; ++t) {
        const std::string& token = list[t];
        if (token.empty() || InvalidUtf8Offset(token) >= 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              name, ".tokens[", t, "] is ", token.empty() ? "empty" : "not valid UTF-8"));
        }
        tokens.push_back(token);
      }
    }
    const TranslationModel& model = *served.model;
    absl::StatusOr<std::vector<int32_t>> ids = model.SourceIds(tokens);
    if (!ids.ok())
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", ids.status().message()));
    if (static_cast<int>(ids->size()) > max_tokens) {
      if (!truncate) {
        return absl::InvalidArgumentError(absl::StrCat(name, " has ", ids->size(),
                                                       " tokens; the limit is ", max_tokens,
                                                       " (max_tokens_per_text)"));
      }
      // Keep the model's specials: cut the tokens, then add BOS/EOS again.
      const int specials = static_cast<int>(ids->size() - tokens.size());
      tokens.resize(std::max(1, max_tokens - specials));
      ids = model.SourceIds(tokens);
      if (!ids.ok()) return ids.status();
      cut = true;
    }
    if (absl::Status s = add(name, std::move(*ids), cut); !s.ok()) return s;
  }
  return inputs;
}

}  // namespace

int64_t InvalidUtf8Offset(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    int length;
    uint32_t min_value;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      length = 2;
      min_value = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      length = 3;
      min_value = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      length = 4;
      min_value = 0x10000;
    } else {
      return static_cast<int64_t>(i);
    }
    if (i + length > n) return static_cast<int64_t>(i);
    uint32_t value = c & (0xFF >> (length + 1));
    for (int k = 1; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      value = (value << 6) | (s[i + k] & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and values beyond Unicode are invalid.
    if (value < min_value || (value >= 0xD800 && value <= 0xDFFF) || value > 0x10FFFF) {
      return static_cast<int64_t>(i);
    }
    i += length;
  }
  return -1;
}

absl::StatusOr<PreparedTranslation> PrepareTranslation(const v1::TranslateRequest& request,
                                                       const ServedModel& model,
                                                       const RequestLimits& limits) {
  if (!model.translates()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model \"", model.name, "\" is an embedding model: it does not translate (use Encode)"));
  }
  PreparedTranslation prepared;
  const v1::TranslateOptions& o = request.options();
  DecodingOptions& options = prepared.options;
  options = model.model->default_options;
  options.max_length = std::min(options.max_length, model.max_decoding_length);
  if (o.has_beam_size()) options.beam_size = o.beam_size();
  options.num_hypotheses = o.has_num_hypotheses() ? o.num_hypotheses() : 1;
  if (o.has_length_penalty()) options.length_penalty = o.length_penalty();
  if (o.has_max_length()) options.max_length = o.max_length();
  if (o.has_min_length()) options.min_length = o.min_length();
  if (options.beam_size > limits.max_beam_size) {
    return absl::InvalidArgumentError(absl::StrCat("options.beam_size is ", options.beam_size,
                                                   "; the limit is ", limits.max_beam_size,
                                                   " (max_beam_size)"));
  }
  if (absl::Status s = ValidateDecodingOptions(options, model.max_decoding_length); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("options.", s.message()));
  }
  prepared.return_scores = o.return_scores();
  prepared.return_tokens = o.return_tokens();
  absl::StatusOr<std::vector<std::vector<int32_t>>> sources =
      TokenizeInputs(request, model, limits, /*truncate=*/false, nullptr);
  if (!sources.ok()) return sources.status();
  prepared.sources = std::move(*sources);
  return prepared;
}

absl::StatusOr<PreparedEncode> PrepareEncode(const v1::EncodeRequest& request,
                                             const ServedModel& model,
                                             const RequestLimits& limits) {
  PreparedEncode prepared;
  prepared.normalize = request.normalize();
  absl::StatusOr<std::vector<std::vector<int32_t>>> inputs =
      TokenizeInputs(request, model, limits, request.truncate(), &prepared.truncated);
  if (!inputs.ok()) {
    if (!request.truncate() &&
        absl::StrContains(inputs.status().message(), "(max_tokens_per_text)")) {
      return absl::InvalidArgumentError(
          absl::StrCat(inputs.status().message(), "; set truncate to cut long inputs"));
    }
    return inputs.status();
  }
  prepared.inputs = std::move(*inputs);
  return prepared;
}

void FillTranslation(const TranslationModel& model, const DecodingBatch::Finished& result,
                     bool return_scores, bool return_tokens, v1::Translation* out) {
  out->set_output_tokens(result.steps);
  for (const Hypothesis& hypothesis : result.hypotheses) {
    v1::Hypothesis* h = out->add_hypotheses();
    h->set_text(model.DecodeText(hypothesis.tokens));
    if (return_scores) h->set_score(hypothesis.score);
    if (return_tokens) {
      for (std::string& token : model.TargetTokens(hypothesis.tokens)) {
        h->add_tokens(std::move(token));
      }
    }
  }
}

void FillModelInfo(const ServedModel& served, bool is_default, const RequestLimits& limits,
                   v1::ModelInfo* out) {
  const EmbeddingModel& embedder = *served.embedder;
  out->set_name(served.name);
  out->set_is_default(is_default);
  out->set_embedding_dimension(embedder.dimension());
  out->set_encoder_layers(static_cast<int>(embedder.encoder().encoder_layers.size()));
  out->set_pooling(embedder.pooling_description() +
                   (embedder.normalizes() ? ", normalized to unit length" : ""));
  out->set_path(embedder.path());
  const BatchingOptions& batching = served.worker->options();
  v1::ModelLimits* l = out->mutable_limits();
  l->set_max_texts_per_request(limits.max_texts_per_request);
  l->set_max_tokens_per_text(served.max_tokens_per_text);
  l->set_max_tokens_per_request(limits.max_tokens_per_request);
  l->set_max_queued_texts(batching.max_queued_texts);
  if (served.translates()) {
    const TranslationModel& model = *served.model;
    const TransformerModel& transformer = *model.transformer;
    out->set_kind(v1::MODEL_KIND_TRANSLATION);
    out->set_architecture(transformer.config.architecture);
    out->set_format(model.format);
    out->set_path(model.path);
    out->set_source_vocabulary_size(transformer.source_vocab_size());
    out->set_target_vocabulary_size(transformer.target_vocab_size());
    out->set_decoder_layers(static_cast<int>(transformer.decoder_layers.size()));
    out->set_quantization(transformer.config.weight_type);
    out->set_compute_type(std::string(ComputeTypeName(transformer.config.compute_type)));
    out->set_tokenizer(std::string(model.codec->name()));
    v1::TranslateOptions* defaults = out->mutable_default_options();
    defaults->set_beam_size(model.default_options.beam_size);
    defaults->set_num_hypotheses(1);
    defaults->set_length_penalty(model.default_options.length_penalty);
    defaults->set_max_length(
        std::min(model.default_options.max_length, served.max_decoding_length));
    defaults->set_min_length(model.default_options.min_length);
    l->set_max_decoding_length(served.max_decoding_length);
    l->set_max_beam_size(limits.max_beam_size);
    l->set_batch_token_budget(batching.batch_token_budget);
    l->set_max_running_sequences(served.worker->max_beams());
    out->set_batching(batching.continuous ? "continuous" : "static");
  } else {
    out->set_kind(v1::MODEL_KIND_EMBEDDING);
    out->set_architecture(embedder.architecture());
    out->set_format("huggingface");
    out->set_source_vocabulary_size(embedder.vocabulary_size());
    out->set_quantization(embedder.weight_type());
    out->set_compute_type(std::string(ComputeTypeName(embedder.compute_type())));
    out->set_tokenizer(embedder.tokenizer_description());
    l->set_batch_token_budget(batching.encode_token_budget);
    out->set_batching("token budget");
  }
  const WorkerStats stats = served.worker->Stats();
  v1::ModelStats* s = out->mutable_stats();
  s->set_requests(stats.translation_jobs + stats.encode_jobs);
  s->set_sentences(stats.sentences);
  s->set_decoding_steps(stats.decoding_steps);
  s->set_decoded_rows(stats.decoded_rows);
  s->set_max_batch_sequences(stats.max_batch_sequences);
  s->set_max_batch_rows(stats.max_batch_rows);
  s->set_encode_batches(stats.encode_batches);
  s->set_encoded_texts(stats.encoded_texts);
  s->set_max_encode_batch(stats.max_encode_batch);
  s->set_running_sequences(stats.running_sequences);
  s->set_queued_texts(stats.queued_texts);
  s->set_rejected_queue_full(stats.rejected_queue_full);
  s->set_cancelled(stats.cancelled);
  s->set_deadline_exceeded(stats.deadline_exceeded);
}

}  // namespace rosetta::server
