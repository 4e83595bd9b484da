// How the clients (`rosetta`, `rosetta-loadgen`) identify themselves and secure their gRPC
// channel: plaintext, TLS with the system's or a given CA, or mutual TLS with a client
// certificate, from PEM files; and the API key a server may require on every call.
//
//   grpc::ChannelArguments arguments;
//   absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
//       ChannelCredentials({.ca_file = "ca.crt"}, &arguments);
//   grpc::CreateCustomChannel(address, *credentials, arguments);
//
// Thread-safe: no state.
#ifndef ROSETTA_CLIENT_CHANNEL_CREDENTIALS_H_
#define ROSETTA_CLIENT_CHANNEL_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace rosetta::client {

struct ChannelSecurity {
  bool tls = false;           // TLS even when no file below is given (the system's CAs)
  std::string ca_file{};      // PEM CA certificates the server's must chain to; empty: the system's
  std::string cert_file{};    // PEM client certificate chain, for servers that require one
  std::string key_file{};     // its PEM private key
  std::string server_name{};  // the name the server's certificate must carry, if not the address's

  // TLS is used when asked for or implied by any file or name.
  bool UsesTls() const {
    return tls || !ca_file.empty() || !cert_file.empty() || !key_file.empty() ||
           !server_name.empty();
  }
};

// Credentials for `security`, reading its files; sets the server name override in `arguments`.
// Errors name the flag (--tls_ca_file, --tls_cert_file, --tls_key_file) and the file: NotFound
// for a file that cannot be read, InvalidArgument for one without PEM data or for a certificate
// without its key (or the reverse).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ChannelSecurity& security, grpc::ChannelArguments* arguments);

// The API key in `path`: its first line that is neither blank nor a '#' comment, checked as
// ApiKeyFrom does. Errors name --api_key_file and the file, never the key.
absl::StatusOr<std::string> ReadApiKey(const std::string& path);

// `value` without the spaces around it ("" for none), if gRPC metadata can carry it: printable
// ASCII without spaces. Otherwise InvalidArgument naming `source` (a flag, a variable).
absl::StatusOr<std::string> ApiKeyFrom(absl::string_view value, absl::string_view source);

// A hint for a failed connection whose cause is a TLS mismatch, from gRPC's message: a plaintext
// client at a TLS server ("Socket closed"), a TLS client at a plaintext server ("wrong version
// number"), a certificate the client does not trust. Empty when there is none. `tls`: whether
// the client used TLS.
std::string ConnectionHint(absl::string_view error_message, bool tls);

// What a call carries when the server requires an API key (rosettad --api_keys_file).
inline constexpr char kApiKeyMetadata[] = "authorization";
inline std::string ApiKeyMetadataValue(const std::string& key) { return "Bearer " + key; }

}  // namespace rosetta::client

#endif  // ROSETTA_CLIENT_CHANNEL_CREDENTIALS_H_
