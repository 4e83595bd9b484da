#include "engine/model_loader.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "engine/ctranslate2_loader.h"
#include "engine/file_util.h"
#include "engine/marian_loader.h"

namespace rosetta {

absl::Status CheckLoadOptions(const LoadOptions& options) {
  return CheckComputeType(options.compute_type);
}

absl::StatusOr<std::unique_ptr<TranslationModel>> LoadTranslationModel(const std::string& dir,
                                                                       const LoadOptions& options) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat(dir, ": not a model directory"));
  }
  if (LooksLikeCt2Directory(dir)) return LoadCt2Model(dir, options.compute_type);
  if (LooksLikeMarianDirectory(dir)) return LoadMarianModel(dir, options.compute_type);
  return absl::InvalidArgumentError(absl::StrCat(
      dir,
      ": unrecognised model directory (expected a CTranslate2 model.bin or a Hugging Face "
      "config.json with model_type \"marian\")"));
}

}  // namespace rosetta
