// Requests to engine work and engine results to responses: validation against the request limits
// and the model, tokenization, and filling the response messages. Every problem a client can
// cause becomes an INVALID_ARGUMENT status naming the field and the limit.
#ifndef ROSETTA_SERVER_REQUESTS_H_
#define ROSETTA_SERVER_REQUESTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/decoding.h"
#include "rosetta/v1/rosetta.pb.h"
#include "server/daemon_options.h"
#include "server/model_registry.h"

namespace rosetta::server {

struct PreparedTranslation {
  std::vector<std::vector<int32_t>> sources;  // token ids, specials included
  DecodingOptions options;
  bool return_scores = false;
  bool return_tokens = false;
};

struct PreparedEncode {
  std::vector<std::vector<int32_t>> inputs;
  std::vector<bool> truncated;
  bool normalize = false;
};

// Offset of the first byte that is not part of valid UTF-8, or -1 when all is valid.
int64_t InvalidUtf8Offset(absl::string_view text);

absl::StatusOr<PreparedTranslation> PrepareTranslation(const v1::TranslateRequest& request,
                                                       const ServedModel& model,
                                                       const RequestLimits& limits);
absl::StatusOr<PreparedEncode> PrepareEncode(const v1::EncodeRequest& request,
                                             const ServedModel& model, const RequestLimits& limits);

// Writes a finished input's hypotheses (text always; scores and tokens when asked).
void FillTranslation(const TranslationModel& model, const DecodingBatch::Finished& result,
                     bool return_scores, bool return_tokens, v1::Translation* out);

// Describes a served model.
void FillModelInfo(const ServedModel& model, bool is_default, const RequestLimits& limits,
                   v1::ModelInfo* out);

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_REQUESTS_H_
