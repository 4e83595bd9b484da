// Early-return helpers for absl::Status and absl::StatusOr.
#ifndef ROSETTA_ENGINE_STATUS_MACROS_H_
#define ROSETTA_ENGINE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ROSETTA_STATUS_CONCAT_INNER(a, b) a##b
#define ROSETTA_STATUS_CONCAT(a, b) ROSETTA_STATUS_CONCAT_INNER(a, b)
#define ROSETTA_ASSIGN_OR_RETURN_IMPL(var, lhs, expr) \
  auto var = (expr);                                  \
  if (!var.ok()) return var.status();                 \
  lhs = std::move(*var)

// ASSIGN_OR_RETURN(T x, ExprReturningStatusOrT()): returns the error, or declares and assigns x.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ROSETTA_ASSIGN_OR_RETURN_IMPL(ROSETTA_STATUS_CONCAT(status_or_, __LINE__), lhs, expr)

// RETURN_IF_ERROR(ExprReturningStatus()).
#define RETURN_IF_ERROR(expr)                                         \
  do {                                                                \
    if (absl::Status status_ = (expr); !status_.ok()) return status_; \
  } while (false)

#endif  // ROSETTA_ENGINE_STATUS_MACROS_H_
