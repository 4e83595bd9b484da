// A small HTTP(S) client over libcurl for the Hugging Face Hub: metadata requests without
// following redirects, and downloads to a file that resume where a previous attempt stopped.
// Thread-compatible: one HttpClient per thread.
#ifndef ROSETTA_HUB_HTTP_CLIENT_H_
#define ROSETTA_HUB_HTTP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace rosetta::hub {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased; the last value wins
  std::string body;                            // HEAD: empty
  std::string Header(const std::string& name) const;
};

class HttpClient {
 public:
  // `token`, when not empty, is sent as "Authorization: Bearer <token>" to `endpoint`'s host
  // only (never to the hosts a redirect leads to).
  HttpClient(std::string endpoint, std::string token);

  // HEAD `url`, not following redirects. A transport failure (DNS, refused, timeout) is an
  // UNAVAILABLE status; any HTTP status is a response.
  absl::StatusOr<HttpResponse> Head(const std::string& url);
  // GET `url` into memory (small files), following redirects.
  absl::StatusOr<HttpResponse> Get(const std::string& url);
  // GET `url` following redirects and append the body to `path`, asking for the bytes after
  // those already in `path` (Range) so that an interrupted download resumes. `progress` gets
  // (bytes in the file, total) now and then. Returns the final HTTP status.
  absl::StatusOr<long> DownloadTo(const std::string& url, const std::string& path,
                                  const std::function<void(int64_t, int64_t)>& progress);

 private:
  std::string endpoint_host_;
  std::string token_;
};

}  // namespace rosetta::hub

#endif  // ROSETTA_HUB_HTTP_CLIENT_H_
