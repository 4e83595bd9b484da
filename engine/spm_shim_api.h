// The C interface of librosetta_spm_shim.so, the one place that links SentencePiece.
//
// Why a separate library: Debian's libsentencepiece exports its bundled copy of protobuf-lite
// 3.14, which clashes with the system libprotobuf 3.21 that gRPC needs (a process that loads
// both crashes while protobuf registers its descriptors). SpmProcessor therefore loads the shim
// with dlmopen() into a link-map namespace of its own, where SentencePiece sees only its own
// protobuf. Nothing but plain C types crosses the boundary: each side has its own allocator.
#ifndef ROSETTA_ENGINE_SPM_SHIM_API_H_
#define ROSETTA_ENGINE_SPM_SHIM_API_H_

#include <stddef.h>

extern "C" {

// Loads a SentencePiece model; null on failure with a message in `error`.
typedef void* (*RosettaSpmLoadFn)(const char* path, char* error, size_t error_size);
typedef void (*RosettaSpmFreeFn)(void* processor);
// Text -> pieces, each followed by '\0', written to `out` when they fit in `capacity`. Returns
// the bytes needed (call again with a larger buffer when more than `capacity`), or -1 on failure
// with a message in `error`.
typedef long (*RosettaSpmEncodeFn)(void* processor, const char* text, size_t size, char* out,
                                   size_t capacity, char* error, size_t error_size);
// Pieces (each followed by '\0', `size` bytes in all) -> text, with the same output contract.
typedef long (*RosettaSpmDecodeFn)(void* processor, const char* pieces, size_t size, char* out,
                                   size_t capacity, char* error, size_t error_size);

}  // extern "C"

#endif  // ROSETTA_ENGINE_SPM_SHIM_API_H_
