#include "hub/http_client.h"

#include <curl/curl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace rosetta::hub {

namespace {

std::string HostOf(const std::string& url) {
  absl::string_view rest = url;
  const size_t scheme = rest.find("://");
  if (scheme != absl::string_view::npos) rest.remove_prefix(scheme + 3);
  return std::string(rest.substr(0, rest.find('/')));
}

size_t CollectHeader(char* data, size_t size, size_t count, void* user) {
  auto* response = static_cast<HttpResponse*>(user);
  absl::string_view line(data, size * count);
  // A new status line (after a redirect or "100 Continue") starts a new set of headers.
  if (absl::StartsWith(line, "HTTP/")) response->headers.clear();
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    response->headers[absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * count;
}

size_t CollectBody(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

struct FileSink {
  FILE* file = nullptr;
  CURL* curl = nullptr;
  int64_t offset = 0;  // bytes in the file before this request
  bool started = false;
};

size_t WriteFile(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<FileSink*>(user);
  long status = 0;
  curl_easy_getinfo(sink->curl, CURLINFO_RESPONSE_CODE, &status);
  // Only the bytes of a successful (partial) answer belong in the file.
  if (status != 200 && status != 206) return size * count;
  if (!sink->started) {
    sink->started = true;
    // A server that ignores the range sends everything: start the file again.
    if (status == 200 && sink->offset > 0 && ftruncate(fileno(sink->file), 0) != 0) return 0;
  }
  return fwrite(data, size, count, sink->file) * size;
}

struct ProgressState {
  const std::function<void(int64_t, int64_t)>* callback;
  int64_t offset;
};

int Progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* state = static_cast<ProgressState*>(user);
  if (*state->callback && total > 0) (*state->callback)(state->offset + now, state->offset + total);
  return 0;
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

const bool kCurlInitialized = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  auto it = headers.find(absl::AsciiStrToLower(name));
  return it == headers.end() ? "" : it->second;
}

HttpClient::HttpClient(std::string endpoint, std::string token)
    : endpoint_host_(HostOf(endpoint)), token_(std::move(token)) {}

namespace {

// Common options; the token goes only to the endpoint's own host.
std::unique_ptr<curl_slist, SlistDeleter> Prepare(CURL* curl, const std::string& url,
                                                  const std::string& endpoint_host,
                                                  const std::string& token) {
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "rosetta/0.1; hf_hub-compatible");
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
  // A stalled transfer (under 1 byte/s for 30 s) fails instead of hanging; it resumes later.
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 30L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_slist* headers = curl_slist_append(nullptr, "Accept-Encoding: identity");
  if (!token.empty() && HostOf(url) == endpoint_host) {
    headers = curl_slist_append(headers, absl::StrCat("Authorization: Bearer ", token).c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  return std::unique_ptr<curl_slist, SlistDeleter>(headers);
}

absl::Status TransportError(CURLcode code, const std::string& url, const char* detail) {
  return absl::UnavailableError(absl::StrCat(
      "cannot reach ", url, ": ", detail[0] != '\0' ? detail : curl_easy_strerror(code)));
}

}  // namespace

absl::StatusOr<HttpResponse> HttpClient::Head(const std::string& url) {
  if (!kCurlInitialized) return absl::InternalError("libcurl failed to initialise");
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  auto headers = Prepare(curl.get(), url, endpoint_host_, token_);
  HttpResponse response;
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_NOBODY, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &response);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 60L);
  const CURLcode code = curl_easy_perform(curl.get());
  if (code != CURLE_OK) return TransportError(code, url, error);
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

absl::StatusOr<HttpResponse> HttpClient::Get(const std::string& url) {
  if (!kCurlInitialized) return absl::InternalError("libcurl failed to initialise");
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  auto headers = Prepare(curl.get(), url, endpoint_host_, token_);
  HttpResponse response;
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &response);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, 120L);
  const CURLcode code = curl_easy_perform(curl.get());
  if (code != CURLE_OK) return TransportError(code, url, error);
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

absl::StatusOr<long> HttpClient::DownloadTo(const std::string& url, const std::string& path,
                                            const std::function<void(int64_t, int64_t)>& progress) {
  if (!kCurlInitialized) return absl::InternalError("libcurl failed to initialise");
  struct stat st;
  const int64_t offset = ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
  FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  auto headers = Prepare(curl.get(), url, endpoint_host_, token_);
  FileSink sink{file, curl.get(), offset, false};
  ProgressState state{&progress, offset};
  char error[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, WriteFile);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_XFERINFOFUNCTION, Progress);
  curl_easy_setopt(curl.get(), CURLOPT_XFERINFODATA, &state);
  curl_easy_setopt(curl.get(), CURLOPT_NOPROGRESS, 0L);
  if (offset > 0) {
    curl_easy_setopt(curl.get(), CURLOPT_RANGE, absl::StrCat(offset, "-").c_str());
  }
  const CURLcode code = curl_easy_perform(curl.get());
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  const bool write_failed = std::fclose(file) != 0;
  if (code != CURLE_OK) return TransportError(code, url, error);
  if (write_failed) return absl::DataLossError(absl::StrCat("cannot write ", path));
  return status;
}

}  // namespace rosetta::hub
