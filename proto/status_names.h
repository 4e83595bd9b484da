// Names of gRPC status codes, as the gRPC documentation spells them.
#ifndef ROSETTA_PROTO_STATUS_NAMES_H_
#define ROSETTA_PROTO_STATUS_NAMES_H_

#include <grpcpp/support/status.h>

#include <string>

namespace rosetta {

// "INVALID_ARGUMENT" for grpc::StatusCode::INVALID_ARGUMENT; "UNKNOWN_CODE_<n>" for codes outside
// the canonical seventeen.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace rosetta

#endif  // ROSETTA_PROTO_STATUS_NAMES_H_
