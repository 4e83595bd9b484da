// A restricted unpickler: reads Python pickles (protocols 2 to 5) into an inert tree of values,
// never running anything. A pickle can name any Python callable (os.system, builtins.eval) and
// call it with REDUCE; this reader accepts only the globals the caller allows and only the
// opcodes a state dict written by torch.save uses, and refuses everything else with an error
// naming the opcode or the global and where it is.
//
// REDUCE does not call anything: it yields a kCall value (callable, arguments) for the caller to
// interpret, except `collections.OrderedDict()` (when allowed), which yields an empty dict so that
// SETITEMS can fill it. BINPERSID yields a kPersistentId value holding the id.
//
// Hostile input is bounded: every read is checked against the data, and the stack, the memo and
// the number of values are limited. Values live in an arena owned by the Pickle: lists may hold
// themselves, and nothing is freed recursively.
#ifndef ROSETTA_ENGINE_PICKLE_H_
#define ROSETTA_ENGINE_PICKLE_H_

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rosetta {

struct PickleValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,  // text (unicode)
    kTuple,
    kList,
    kDict,
    kGlobal,        // string_value is "module.name"
    kCall,          // items = {callable, arguments tuple}: REDUCE of an allowed global
    kPersistentId,  // items = {id}
  };
  Kind kind = Kind::kNone;
  bool bool_value = false;
  int64_t int_value = 0;
  double float_value = 0.0;
  std::string string_value;
  std::vector<const PickleValue*> items;                                   // tuple, list, call, id
  std::vector<std::pair<const PickleValue*, const PickleValue*>> entries;  // dict, in order

  bool is(Kind k) const { return kind == k; }
  // For kCall: whether the callable is the global `name` ("module.name").
  bool IsCallOf(absl::string_view name) const;
};

absl::string_view PickleKindName(PickleValue::Kind kind);

struct UnpickleOptions {
  // The globals GLOBAL and STACK_GLOBAL may name, as "module.name"; any other is refused.
  std::set<std::string> allowed_globals;
  // Limits against hostile input.
  int64_t max_stack = 1 << 20;
  int64_t max_memo = 1 << 22;
  int64_t max_values = 1 << 24;
};

// The values of one pickle; `root()` is what STOP returned. Movable, not copyable.
class Pickle {
 public:
  Pickle() = default;
  Pickle(Pickle&&) = default;
  Pickle& operator=(Pickle&&) = default;

  const PickleValue& root() const { return *root_; }

 private:
  friend class Unpickler;
  std::vector<std::unique_ptr<PickleValue>> arena_;
  const PickleValue* root_ = nullptr;
};

// Reads `data`; errors are DataLossError (truncated or malformed) or PermissionDenied (a refused
// opcode or global) and start with `where` (the file), then the byte offset.
absl::StatusOr<Pickle> Unpickle(absl::string_view data, const UnpickleOptions& options,
                                absl::string_view where);

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_PICKLE_H_
