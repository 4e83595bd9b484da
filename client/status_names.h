// Names of gRPC status codes, as the gRPC documentation spells them.
#ifndef ROSETTA_CLIENT_STATUS_NAMES_H_
#define ROSETTA_CLIENT_STATUS_NAMES_H_

#include <grpcpp/support/status.h>

#include <string>

namespace rosetta::client {

// "INVALID_ARGUMENT" for grpc::StatusCode::INVALID_ARGUMENT; "UNKNOWN_CODE_<n>" for codes outside
// the canonical seventeen.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace rosetta::client

#endif  // ROSETTA_CLIENT_STATUS_NAMES_H_
