#include "engine/spm_processor.h"

#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

#include <mutex>

#include "engine/spm_shim_api.h"

#ifndef ROSETTA_SPM_SHIM_BUILD_PATH
#define ROSETTA_SPM_SHIM_BUILD_PATH ""
#endif

namespace rosetta {

namespace {

constexpr char kShimName[] = "librosetta_spm_shim.so";

struct Shim {
  RosettaSpmLoadFn load = nullptr;
  RosettaSpmFreeFn free = nullptr;
  RosettaSpmEncodeFn encode = nullptr;
  RosettaSpmDecodeFn decode = nullptr;
  std::string error;  // why the shim is unusable, when it is
};

std::string ExecutableDir() {
  char buffer[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) return "";
  std::string path(buffer, n);
  return path.substr(0, path.rfind('/'));
}

// Where the shim may be: beside the executable, in ../lib/rosetta (installed), in the build tree.
std::vector<std::string> ShimCandidates() {
  const std::string dir = ExecutableDir();
  std::vector<std::string> candidates;
  if (!dir.empty()) {
    candidates.push_back(dir + "/" + kShimName);
    candidates.push_back(dir + "/../lib/rosetta/" + kShimName);
  }
  if (ROSETTA_SPM_SHIM_BUILD_PATH[0] != '\0') candidates.push_back(ROSETTA_SPM_SHIM_BUILD_PATH);
  return candidates;
}

const Shim& GetShim() {
  static const Shim* shim = [] {
    auto* s = new Shim();
    std::string tried;
    void* handle = nullptr;
    for (const std::string& path : ShimCandidates()) {
      if (access(path.c_str(), R_OK) != 0) {
        tried += " " + path;
        continue;
      }
      // A namespace of its own: SentencePiece's bundled protobuf must not meet libprotobuf.
      handle = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        s->error = std::string("cannot load ") + path + ": " + dlerror();
        return s;
      }
      break;
    }
    if (handle == nullptr) {
      s->error = std::string("SentencePiece support (") + kShimName + ") not found; tried" + tried;
      return s;
    }
    s->load = reinterpret_cast<RosettaSpmLoadFn>(dlsym(handle, "rosetta_spm_load"));
    s->free = reinterpret_cast<RosettaSpmFreeFn>(dlsym(handle, "rosetta_spm_free"));
    s->encode = reinterpret_cast<RosettaSpmEncodeFn>(dlsym(handle, "rosetta_spm_encode"));
    s->decode = reinterpret_cast<RosettaSpmDecodeFn>(dlsym(handle, "rosetta_spm_decode"));
    if (!s->load || !s->free || !s->encode || !s->decode) {
      s->error = std::string(kShimName) + " lacks the rosetta_spm_* functions";
    }
    return s;
  }();
  return *shim;
}

constexpr size_t kErrorSize = 512;

// Calls a shim function with the output contract of spm_shim_api.h.
template <typename Fn>
bool CallWithBuffer(Fn fn, std::string* out, std::string* error) {
  char message[kErrorSize] = {0};
  std::string buffer(256, '\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    const long needed = fn(buffer.data(), buffer.size(), message, sizeof(message));
    if (needed < 0) {
      *error = message;
      return false;
    }
    if (static_cast<size_t>(needed) <= buffer.size()) {
      buffer.resize(needed);
      *out = std::move(buffer);
      return true;
    }
    buffer.assign(needed, '\0');
  }
  *error = "SentencePiece output changed size between calls";
  return false;
}

}  // namespace

struct SpmProcessor::Impl {
  void* processor = nullptr;
  ~Impl() {
    if (processor != nullptr) GetShim().free(processor);
  }
};

SpmProcessor::SpmProcessor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmProcessor::~SpmProcessor() = default;

std::unique_ptr<SpmProcessor> SpmProcessor::Load(const std::string& path, std::string* error) {
  const Shim& shim = GetShim();
  if (!shim.error.empty()) {
    *error = shim.error;
    return nullptr;
  }
  char message[kErrorSize] = {0};
  auto impl = std::make_unique<Impl>();
  impl->processor = shim.load(path.c_str(), message, sizeof(message));
  if (impl->processor == nullptr) {
    *error = message;
    return nullptr;
  }
  return std::unique_ptr<SpmProcessor>(new SpmProcessor(std::move(impl)));
}

bool SpmProcessor::Encode(const std::string& text, std::vector<std::string>* pieces,
                          std::string* error) const {
  std::string joined;
  const bool ok = CallWithBuffer(
      [&](char* out, size_t capacity, char* message, size_t message_size) {
        return GetShim().encode(impl_->processor, text.data(), text.size(), out, capacity, message,
                                message_size);
      },
      &joined, error);
  if (!ok) return false;
  pieces->clear();
  size_t start = 0;
  for (size_t i = 0; i < joined.size(); ++i) {
    if (joined[i] == '\0') {
      pieces->emplace_back(joined, start, i - start);
      start = i + 1;
    }
  }
  return true;
}

bool SpmProcessor::Decode(const std::vector<std::string>& pieces, std::string* text,
                          std::string* error) const {
  std::string joined;
  for (const std::string& piece : pieces) {
    joined += piece;
    joined.push_back('\0');
  }
  return CallWithBuffer(
      [&](char* out, size_t capacity, char* message, size_t message_size) {
        return GetShim().decode(impl_->processor, joined.data(), joined.size(), out, capacity,
                                message, message_size);
      },
      text, error);
}

}  // namespace rosetta
