#include "client/channel_credentials.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rosetta::client {

namespace {

// The file's contents; `marker` ("CERTIFICATE", "PRIVATE KEY") must appear in a PEM header, so
// that a wrong file fails here, naming it, rather than in the handshake.
absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path,
                                    absl::string_view marker) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--", flag, ": cannot read ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  std::string pem = contents.str();
  // Any block: a key file may start with other blocks ("EC PARAMETERS").
  for (size_t begin = pem.find("-----BEGIN "); begin != std::string::npos;
       begin = pem.find("-----BEGIN ", begin + 1)) {
    const size_t end = pem.find("-----", begin + 11);
    if (end != std::string::npos &&
        absl::StrContains(absl::string_view(pem).substr(begin, end - begin), marker)) {
      return pem;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, ": ", path, ": no PEM ", absl::AsciiStrToLower(marker), " in it"));
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ChannelSecurity& security, grpc::ChannelArguments* arguments) {
  if (!security.UsesTls()) return grpc::InsecureChannelCredentials();
  if (security.cert_file.empty() != security.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together (a client certificate and its key)");
  }
  grpc::SslCredentialsOptions options;
  if (!security.ca_file.empty()) {
    absl::StatusOr<std::string> pem = ReadPem("tls_ca_file", security.ca_file, "CERTIFICATE");
    if (!pem.ok()) return pem.status();
    options.pem_root_certs = std::move(*pem);
  }
  if (!security.cert_file.empty()) {
    absl::StatusOr<std::string> chain = ReadPem("tls_cert_file", security.cert_file, "CERTIFICATE");
    if (!chain.ok()) return chain.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key_file", security.key_file, "PRIVATE KEY");
    if (!key.ok()) return key.status();
    options.pem_cert_chain = std::move(*chain);
    options.pem_private_key = std::move(*key);
  }
  if (!security.server_name.empty()) arguments->SetSslTargetNameOverride(security.server_name);
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::string> ReadApiKey(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--api_key_file: cannot read ", path));
  std::string line;
  while (std::getline(in, line)) {
    const absl::string_view key = absl::StripAsciiWhitespace(line);
    if (!key.empty() && key[0] != '#')
      return ApiKeyFrom(key, absl::StrCat("--api_key_file ", path));
  }
  return absl::InvalidArgumentError(absl::StrCat("--api_key_file: ", path, " holds no key"));
}

absl::StatusOr<std::string> ApiKeyFrom(absl::string_view value, absl::string_view source) {
  const absl::string_view key = absl::StripAsciiWhitespace(value);
  for (const char c : key) {
    // gRPC aborts on a metadata value outside printable ASCII (and logs it).
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": the API key has a character other than printable ASCII without spaces"));
    }
  }
  return std::string(key);
}

std::string ConnectionHint(absl::string_view error_message, bool tls) {
  if (!absl::StrContains(error_message, "failed to connect")) return "";
  if (!tls && absl::StrContains(error_message, "Socket closed")) {
    return "the server may require TLS: give --tls_ca_file FILE (or --tls for the system's CAs)";
  }
  if (tls && absl::StrContains(error_message, "wrong version number")) {
    return "the server does not seem to use TLS: drop the --tls flags";
  }
  if (tls && absl::StrContains(error_message, "certificate verify failed")) {
    return "the server's certificate does not chain to a trusted CA: check --tls_ca_file";
  }
  return "";
}

}  // namespace rosetta::client
