#include "hub/hub_model.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "hub/http_client.h"
#include "nlohmann/json.hpp"

namespace rosetta::hub {

namespace fs = std::filesystem;

namespace {

// Files a model may need besides its weights, tried in this order; absent ones are fine.
const char* const kOptionalFiles[] = {
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "source.spm",
    "target.spm",
    "sentencepiece.bpe.model",
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "shared_vocabulary.json",
    "shared_vocabulary.txt",
    "source_vocabulary.json",
    "source_vocabulary.txt",
    "target_vocabulary.json",
    "target_vocabulary.txt",
};

bool IsCommitHash(absl::string_view s) {
  if (s.size() != 40) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

bool WriteText(const fs::path& path, const std::string& text) {
  std::error_code error;
  fs::create_directories(path.parent_path(), error);
  const fs::path temp = path.string() + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << text;
    if (!out) return false;
  }
  fs::rename(temp, path, error);
  return !error;
}

std::string HumanBytes(int64_t bytes) {
  if (bytes >= (1 << 20)) return absl::StrFormat("%.1f MB", bytes / 1e6);
  if (bytes >= 1024) return absl::StrFormat("%.1f kB", bytes / 1e3);
  return absl::StrCat(bytes, " B");
}

absl::StatusOr<std::string> Sha256Hex(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path.string()));
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), buffer.size());
    EVP_DigestUpdate(context, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context, digest, &length);
  EVP_MD_CTX_free(context);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  return hex;
}

// An ETag without its weak prefix and quotes.
std::string CleanEtag(std::string etag) {
  absl::string_view view = etag;
  absl::ConsumePrefix(&view, "W/");
  view = absl::StripPrefix(absl::StripSuffix(view, "\""), "\"");
  return std::string(view);
}

// Where a file stands, and the walk over the files a model needs.
enum class Presence { kPresent, kAbsent };
using FileGetter = std::function<absl::StatusOr<Presence>(const std::string& file)>;

// Gets the optional files, then the weights (single, sharded or PyTorch, or a CTranslate2
// model.bin). `read` returns the text of a file already got (index files).
absl::Status WalkModelFiles(const std::string& repo, const FileGetter& get,
                            const std::function<std::string(const std::string&)>& read) {
  bool has_config = false;
  for (const char* file : kOptionalFiles) {
    absl::StatusOr<Presence> presence = get(file);
    if (!presence.ok()) return presence.status();
    if (std::string(file) == "config.json") has_config = *presence == Presence::kPresent;
  }
  for (const char* single : {"model.safetensors", "pytorch_model.bin"}) {
    absl::StatusOr<Presence> presence = get(single);
    if (!presence.ok()) return presence.status();
    if (*presence == Presence::kPresent) return absl::OkStatus();
    const std::string index = absl::StrCat(single, ".index.json");
    presence = get(index);
    if (!presence.ok()) return presence.status();
    if (*presence == Presence::kAbsent) continue;
    nlohmann::json json = nlohmann::json::parse(read(index), nullptr, false);
    if (json.is_discarded() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(repo, "/", index, " has no weight_map"));
    }
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : json["weight_map"].items()) {
      if (!shard.is_string() || absl::StrContains(shard.get<std::string>(), "..")) {
        return absl::DataLossError(absl::StrCat(repo, "/", index, ": bad shard for ", tensor));
      }
      shards.insert(shard.get<std::string>());
    }
    for (const std::string& shard : shards) {
      presence = get(shard);
      if (!presence.ok()) return presence.status();
      if (*presence == Presence::kAbsent) {
        return absl::NotFoundError(
            absl::StrCat(repo, ": ", index, " names ", shard, ", which the repository lacks"));
      }
    }
    return absl::OkStatus();
  }
  absl::StatusOr<Presence> ct2 = get("model.bin");
  if (!ct2.ok()) return ct2.status();
  if (*ct2 == Presence::kPresent) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat(
      repo, has_config ? " has" : " has no config.json and",
      " no weights: none of model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
      "pytorch_model.bin.index.json or model.bin (CTranslate2)"));
}

class Fetcher {
 public:
  Fetcher(const HubModelId& id, const HubOptions& options)
      : id_(id),
        options_(options),
        http_(options.endpoint, options.token),
        repo_dir_(fs::path(options.cache_dir) /
                  absl::StrCat("models--", absl::StrReplaceAll(id.repo, {{"/", "--"}}))) {}

  // The cached commit of the revision, if any.
  std::optional<std::string> CachedCommit() const {
    if (IsCommitHash(id_.revision)) return id_.revision;
    const fs::path ref = repo_dir_ / "refs" / id_.revision;
    if (!fs::exists(ref)) return std::nullopt;
    std::string commit(absl::StripAsciiWhitespace(ReadText(ref)));
    if (!IsCommitHash(commit)) return std::nullopt;
    return commit;
  }

  fs::path Snapshot(const std::string& commit) const { return repo_dir_ / "snapshots" / commit; }

  // Whether every file the model needs is in the cache (present, or known absent).
  bool CacheComplete(const std::string& commit) {
    const fs::path snapshot = Snapshot(commit);
    const fs::path no_exist = repo_dir_ / ".no_exist" / commit;
    FileGetter from_cache = [&](const std::string& file) -> absl::StatusOr<Presence> {
      if (fs::exists(snapshot / file)) return Presence::kPresent;
      if (fs::exists(no_exist / file)) return Presence::kAbsent;
      return absl::FailedPreconditionError("not cached");
    };
    return WalkModelFiles(id_.repo, from_cache,
                          [&](const std::string& file) { return ReadText(snapshot / file); })
        .ok();
  }

  absl::StatusOr<std::string> Run() {
    const std::string name = absl::StrCat(id_.repo, "@", id_.revision);
    std::optional<std::string> cached = CachedCommit();
    if (cached && CacheComplete(*cached)) {
      Log(absl::StrCat(name, ": using the cached snapshot ", *cached, " (no network access)"));
      return Snapshot(*cached).string();
    }
    if (options_.offline) {
      return absl::UnavailableError(absl::StrCat("HF_HUB_OFFLINE is set and the cache ",
                                                 options_.cache_dir, " has no complete copy of ",
                                                 name));
    }
    Log(absl::StrCat(name, ": fetching from ", options_.endpoint, " into ", options_.cache_dir));
    absl::Status walked = WalkModelFiles(
        id_.repo, [this](const std::string& file) { return Fetch(file); },
        [this](const std::string& file) { return ReadText(Snapshot(commit_) / file); });
    if (!walked.ok()) return walked;
    if (!IsCommitHash(id_.revision) && !commit_.empty()) {
      WriteText(repo_dir_ / "refs" / id_.revision, commit_);
    }
    Log(absl::StrCat(name, ": complete at commit ", commit_));
    return Snapshot(commit_).string();
  }

 private:
  void Log(const std::string& line) const {
    if (options_.log) options_.log(absl::StrCat("hub: ", line));
  }

  std::string ResolveUrl(const std::string& file) const {
    return absl::StrCat(absl::StripSuffix(options_.endpoint, "/"), "/", id_.repo, "/resolve/",
                        id_.revision, "/", file);
  }

  // A Hub error answer as a status, or OK when `status` is not one.
  absl::Status HubError(const HttpResponse& response, const std::string& file) const {
    const std::string code = response.Header("x-error-code");
    const std::string repo = id_.repo;
    if (code == "RepositoryNotFound" ||
        ((response.status == 401 || response.status == 404) && code.empty() && commit_.empty() &&
         file == "config.json")) {
      if (response.status == 401 && !options_.token.empty()) {
        return absl::PermissionDeniedError(
            absl::StrCat("the Hub refused the token (HF_TOKEN) for ", repo, " (HTTP 401)"));
      }
      return absl::NotFoundError(
          absl::StrCat("repository ", repo, " not found on ", options_.endpoint,
                       options_.token.empty() ? " (if it is private, set HF_TOKEN)" : ""));
    }
    if (code == "RevisionNotFound") {
      return absl::NotFoundError(
          absl::StrCat("revision \"", id_.revision, "\" of ", repo, " not found"));
    }
    if (code == "GatedRepo" || response.status == 403) {
      return absl::PermissionDeniedError(absl::StrCat(
          repo, " is gated or forbidden (HTTP ", response.status,
          "): accept its terms on the Hub and set HF_TOKEN to a token that may read it"));
    }
    if (response.status == 401) {
      return absl::PermissionDeniedError(absl::StrCat(
          "authentication failed for ", repo, " (HTTP 401)",
          options_.token.empty() ? ": set HF_TOKEN" : ": the token (HF_TOKEN) was refused"));
    }
    if (response.status >= 500) {
      return absl::UnavailableError(absl::StrCat(options_.endpoint, " answered HTTP ",
                                                 response.status, " for ", repo, "/", file));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Presence> Fetch(const std::string& file) {
    const std::string url = ResolveUrl(file);
    absl::StatusOr<HttpResponse> head = http_.Head(url);
    // Renamed repositories answer with a relative redirect to the new name.
    for (int hops = 0;
         head.ok() && hops < 3 &&
         (head->status == 301 || head->status == 302 || head->status == 307 ||
          head->status == 308) &&
         absl::StartsWith(head->Header("location"), "/") && head->Header("x-linked-etag").empty();
         ++hops) {
      head = http_.Head(
          absl::StrCat(absl::StripSuffix(options_.endpoint, "/"), head->Header("location")));
    }
    if (!head.ok()) {
      return absl::UnavailableError(absl::StrCat(head.status().message(),
                                                 "; the cache has no complete copy of ", id_.repo,
                                                 " (HF_HUB_OFFLINE=1 uses the cache only)"));
    }
    if (absl::Status error = HubError(*head, file); !error.ok()) return error;
    const std::string commit = head->Header("x-repo-commit");
    if (head->status == 404) {
      // The file is absent at this commit: remember it, as huggingface_hub does.
      if (!commit.empty()) commit_ = commit;
      if (!commit_.empty()) WriteText(repo_dir_ / ".no_exist" / commit_ / file, "");
      return Presence::kAbsent;
    }
    if (head->status >= 400) {
      return absl::UnavailableError(absl::StrCat(url, " answered HTTP ", head->status));
    }
    if (commit.empty() || !IsCommitHash(commit)) {
      return absl::DataLossError(absl::StrCat(url, ": the answer has no X-Repo-Commit"));
    }
    if (!commit_.empty() && commit != commit_) {
      return absl::AbortedError(absl::StrCat(id_.repo, " changed while downloading (commit ",
                                             commit_, ", then ", commit, "): retry"));
    }
    commit_ = commit;
    const std::string linked_etag = CleanEtag(head->Header("x-linked-etag"));
    const std::string etag = linked_etag.empty() ? CleanEtag(head->Header("etag")) : linked_etag;
    if (etag.empty() || absl::StrContains(etag, "/") || absl::StrContains(etag, "..")) {
      return absl::DataLossError(absl::StrCat(url, ": the answer has no usable ETag"));
    }
    int64_t size = -1;
    const std::string size_text = head->Header("x-linked-size").empty()
                                      ? head->Header("content-length")
                                      : head->Header("x-linked-size");
    if (!absl::SimpleAtoi(size_text, &size)) size = -1;
    // An LFS file's ETag is the sha256 of its contents.
    const bool check_sha = !linked_etag.empty() && linked_etag.size() == 64;

    const fs::path blob = repo_dir_ / "blobs" / etag;
    std::error_code error;
    fs::create_directories(blob.parent_path(), error);
    if (!fs::exists(blob) || (size >= 0 && static_cast<int64_t>(fs::file_size(blob)) != size)) {
      absl::Status downloaded = Download(file, blob, size, check_sha ? etag : "");
      if (!downloaded.ok()) return downloaded;
    }
    const fs::path link = Snapshot(commit_) / file;
    fs::create_directories(link.parent_path(), error);
    fs::remove(link, error);
    fs::create_symlink(fs::relative(blob, link.parent_path()), link, error);
    if (error) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot link ", link.string(), ": ", error.message()));
    }
    return Presence::kPresent;
  }

  absl::Status Download(const std::string& file, const fs::path& blob, int64_t size,
                        const std::string& sha256) {
    const fs::path partial = blob.string() + ".incomplete";
    std::error_code error;
    const int64_t already = fs::exists(partial) ? static_cast<int64_t>(fs::file_size(partial)) : 0;
    const std::string what = absl::StrCat(id_.repo, "/", file);
    Log(absl::StrCat("downloading ", what,
                     size >= 0 ? absl::StrCat(" (", HumanBytes(size), ")") : "",
                     already > 0 ? absl::StrCat(", resuming after ", HumanBytes(already)) : ""));
    const auto start = std::chrono::steady_clock::now();
    auto last_log = start;
    absl::StatusOr<long> status = 0L;
    if (size < 0 || already < size) {
      status =
          http_.DownloadTo(ResolveUrl(file), partial.string(), [&](int64_t now, int64_t total) {
            const auto t = std::chrono::steady_clock::now();
            if (t - last_log > std::chrono::seconds(5)) {
              last_log = t;
              Log(absl::StrCat(what, ": ", HumanBytes(now), " of ", HumanBytes(total)));
            }
          });
      if (!status.ok()) {
        return absl::UnavailableError(absl::StrCat("download of ", what, " interrupted (",
                                                   status.status().message(),
                                                   "); the next start resumes it"));
      }
      if (*status != 200 && *status != 206) {
        return absl::UnavailableError(absl::StrCat("download of ", what, ": HTTP ", *status));
      }
    }
    const int64_t got = static_cast<int64_t>(fs::file_size(partial, error));
    if (size >= 0 && got != size) {
      fs::remove(partial, error);
      return absl::DataLossError(absl::StrCat(what, ": received ", got, " bytes, the Hub says ",
                                              size, "; the partial file was removed"));
    }
    if (!sha256.empty()) {
      absl::StatusOr<std::string> digest = Sha256Hex(partial);
      if (!digest.ok()) return digest.status();
      if (*digest != sha256) {
        fs::remove(partial, error);
        return absl::DataLossError(absl::StrCat(what, ": sha256 ", *digest, " does not match ",
                                                sha256,
                                                " published by the Hub; the file was removed"));
      }
    }
    fs::rename(partial, blob, error);
    if (error) return absl::PermissionDeniedError(absl::StrCat("cannot rename ", partial.string()));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Log(absl::StrCat(what, ": ", HumanBytes(got), " in ", absl::StrFormat("%.1f", seconds), " s",
                     sha256.empty() ? "" : ", sha256 verified"));
    return absl::OkStatus();
  }

  const HubModelId id_;
  const HubOptions& options_;
  HttpClient http_;
  const fs::path repo_dir_;
  std::string commit_;  // the commit the files come from, once known
};

}  // namespace

HubOptions HubOptionsFromEnvironment() {
  HubOptions options;
  auto env = [](const char* name) -> std::string {
    const char* value = std::getenv(name);
    return value == nullptr ? "" : value;
  };
  std::string home = env("HF_HOME");
  if (home.empty()) {
    const std::string xdg = env("XDG_CACHE_HOME");
    home = xdg.empty() ? absl::StrCat(env("HOME"), "/.cache/huggingface")
                       : absl::StrCat(xdg, "/huggingface");
  }
  options.cache_dir = env("HF_HUB_CACHE");
  if (options.cache_dir.empty()) options.cache_dir = env("HUGGINGFACE_HUB_CACHE");
  if (options.cache_dir.empty()) options.cache_dir = home + "/hub";
  if (!env("HF_ENDPOINT").empty()) options.endpoint = env("HF_ENDPOINT");
  options.token = env("HF_TOKEN");
  if (options.token.empty()) options.token = env("HUGGING_FACE_HUB_TOKEN");
  if (options.token.empty()) {
    options.token = std::string(absl::StripAsciiWhitespace(ReadText(home + "/token")));
  }
  const std::string offline = absl::AsciiStrToLower(env("HF_HUB_OFFLINE"));
  options.offline = offline == "1" || offline == "true" || offline == "yes" || offline == "on";
  return options;
}

std::optional<HubModelId> ParseHubModelId(absl::string_view text) {
  HubModelId id;
  const size_t at = text.find('@');
  absl::string_view repo = text.substr(0, at);
  if (at != absl::string_view::npos) {
    id.revision = std::string(text.substr(at + 1));
    if (id.revision.empty() || absl::StrContains(id.revision, "..")) return std::nullopt;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(repo, '/');
  if (parts.size() != 2) return std::nullopt;
  for (absl::string_view part : parts) {
    if (part.empty() || part == "." || part == ".." || part.size() > 96) return std::nullopt;
    for (char c : part) {
      if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') return std::nullopt;
    }
  }
  id.repo = std::string(repo);
  return id;
}

absl::StatusOr<std::string> FetchHubModel(const HubModelId& id, const HubOptions& options) {
  if (options.cache_dir.empty()) return absl::InvalidArgumentError("no Hub cache directory");
  Fetcher fetcher(id, options);
  return fetcher.Run();
}

}  // namespace rosetta::hub
