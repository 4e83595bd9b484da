// Models from the Hugging Face Hub by repository id ("org/name" or "org/name@revision"),
// downloaded into a cache laid out as huggingface_hub lays it out, so that a cache filled by the
// Python tools is reused and vice versa:
//   <cache>/models--org--name/blobs/<etag>                   file contents
//   <cache>/models--org--name/snapshots/<commit>/<file>      symlinks into blobs
//   <cache>/models--org--name/refs/<revision>                the commit a branch or tag named
//   <cache>/models--org--name/.no_exist/<commit>/<file>      files known to be absent
// Downloads go to blobs/<etag>.incomplete, resume after an interruption (HTTP Range), are checked
// against the size and, for large (LFS) files, the sha256 the Hub publishes, and are renamed into
// place only when complete. A model whose files are all in the cache is used without any network
// access.
#ifndef ROSETTA_HUB_HUB_MODEL_H_
#define ROSETTA_HUB_HUB_MODEL_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta::hub {

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // HF_ENDPOINT
  std::string cache_dir;                            // HF_HUB_CACHE, else $HF_HOME/hub
  std::string token;                                // HF_TOKEN, else the file $HF_HOME/token
  bool offline = false;                             // HF_HUB_OFFLINE=1: the cache only
  std::function<void(const std::string&)> log;      // progress lines; may be empty
};

// The options the huggingface_hub environment variables ask for (HF_HOME, HF_HUB_CACHE,
// HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE; defaults: ~/.cache/huggingface/hub and the public Hub).
// Call from main(); nothing else reads the environment.
HubOptions HubOptionsFromEnvironment();

struct HubModelId {
  std::string repo;               // "org/name"
  std::string revision = "main";  // a branch, a tag or a commit hash
};

// "org/name" or "org/name@revision" with the Hub's characters ([A-Za-z0-9._-], one slash);
// nullopt for anything else (a local path, say).
std::optional<HubModelId> ParseHubModelId(absl::string_view text);

// The local directory (the snapshot) holding the files the model needs, downloading what the
// cache lacks. Errors: NOT_FOUND (repository, revision or weights missing), PERMISSION_DENIED
// (authentication refused, gated repository), UNAVAILABLE (no network and no cached copy),
// DATA_LOSS (a download that does not match its size or sha256; the partial file is removed).
absl::StatusOr<std::string> FetchHubModel(const HubModelId& id, const HubOptions& options);

}  // namespace rosetta::hub

#endif  // ROSETTA_HUB_HUB_MODEL_H_
