#include "engine/pickle.h"

#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace rosetta {

bool PickleValue::IsCallOf(absl::string_view name) const {
  return kind == Kind::kCall && items.size() == 2 && items[0]->kind == Kind::kGlobal &&
         items[0]->string_value == name;
}

absl::string_view PickleKindName(PickleValue::Kind kind) {
  switch (kind) {
    case PickleValue::Kind::kNone:
      return "None";
    case PickleValue::Kind::kBool:
      return "bool";
    case PickleValue::Kind::kInt:
      return "int";
    case PickleValue::Kind::kFloat:
      return "float";
    case PickleValue::Kind::kString:
      return "str";
    case PickleValue::Kind::kTuple:
      return "tuple";
    case PickleValue::Kind::kList:
      return "list";
    case PickleValue::Kind::kDict:
      return "dict";
    case PickleValue::Kind::kGlobal:
      return "global";
    case PickleValue::Kind::kCall:
      return "call";
    case PickleValue::Kind::kPersistentId:
      return "persistent id";
  }
  return "unknown";
}

namespace {

// Opcodes a pickle may hold that this reader refuses, by name, for the error message.
absl::string_view RefusedOpcodeName(uint8_t op) {
  switch (op) {
    case 'i':
      return "INST";
    case 'o':
      return "OBJ";
    case 0x81:
      return "NEWOBJ";
    case 0x92:
      return "NEWOBJ_EX";
    case 0x82:
      return "EXT1";
    case 0x83:
      return "EXT2";
    case 0x84:
      return "EXT4";
    case 'P':
      return "PERSID";
    case 'I':
      return "INT";
    case 'L':
      return "LONG";
    case 0x8b:
      return "LONG4";
    case 'F':
      return "FLOAT";
    case 'S':
      return "STRING";
    case 'T':
      return "BINSTRING";
    case 'U':
      return "SHORT_BINSTRING";
    case 'V':
      return "UNICODE";
    case 'B':
      return "BINBYTES";
    case 'C':
      return "SHORT_BINBYTES";
    case 0x8e:
      return "BINBYTES8";
    case 0x96:
      return "BYTEARRAY8";
    case 0x97:
      return "NEXT_BUFFER";
    case 0x98:
      return "READONLY_BUFFER";
    case 'g':
      return "GET";
    case 'p':
      return "PUT";
    case '0':
      return "POP";
    case '1':
      return "POP_MARK";
    case '2':
      return "DUP";
    case 'l':
      return "LIST";
    case 'd':
      return "DICT";
    case 0x8f:
      return "EMPTY_SET";
    case 0x90:
      return "ADDITEMS";
    case 0x91:
      return "FROZENSET";
  }
  return "";
}

}  // namespace

class Unpickler {
 public:
  Unpickler(absl::string_view data, const UnpickleOptions& options, absl::string_view where)
      : data_(data), options_(options), where_(where) {}

  absl::StatusOr<Pickle> Run();

 private:
  using Kind = PickleValue::Kind;

  absl::Status Corrupt(absl::string_view message) const {
    return absl::DataLossError(absl::StrCat(where_, ": byte ", op_offset_, ": ", message));
  }
  absl::Status Refused(absl::string_view message) const {
    return absl::PermissionDeniedError(absl::StrCat(where_, ": byte ", op_offset_, ": ", message));
  }

  absl::Status Need(uint64_t n) const {
    if (n > data_.size() - pos_) {
      return Corrupt(
          absl::StrCat("truncated: needs ", n, " more bytes, ", data_.size() - pos_, " left"));
    }
    return absl::OkStatus();
  }
  // Little-endian unsigned integer of `n` bytes (n <= 8); REQUIRES: Need(n).
  uint64_t ReadLittle(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
    pos_ += n;
    return v;
  }
  absl::StatusOr<uint64_t> Little(int n) {
    if (absl::Status s = Need(n); !s.ok()) return s;
    return ReadLittle(n);
  }
  absl::StatusOr<std::string> Bytes(uint64_t n) {
    if (absl::Status s = Need(n); !s.ok()) return s;
    std::string out(data_.substr(pos_, n));
    pos_ += n;
    return out;
  }
  absl::StatusOr<std::string> Line() {
    const size_t end = data_.find('\n', pos_);
    if (end == absl::string_view::npos) return Corrupt("truncated: a GLOBAL line has no newline");
    std::string out(data_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }

  absl::StatusOr<PickleValue*> New(Kind kind) {
    if (static_cast<int64_t>(pickle_.arena_.size()) >= options_.max_values) {
      return Corrupt(absl::StrCat("more than ", options_.max_values, " values"));
    }
    pickle_.arena_.push_back(std::make_unique<PickleValue>());
    pickle_.arena_.back()->kind = kind;
    return pickle_.arena_.back().get();
  }
  absl::Status Push(PickleValue* v) {
    if (static_cast<int64_t>(stack_.size() + marks_.size()) >= options_.max_stack) {
      return Corrupt(absl::StrCat("stack deeper than ", options_.max_stack));
    }
    stack_.push_back(v);
    return absl::OkStatus();
  }
  absl::Status PushNew(Kind kind, PickleValue** out = nullptr) {
    absl::StatusOr<PickleValue*> v = New(kind);
    if (!v.ok()) return v.status();
    if (out != nullptr) *out = *v;
    return Push(*v);
  }
  // The bottom of the current frame: the last MARK, else 0.
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<PickleValue*> Pop() {
    if (stack_.size() <= Floor()) return Corrupt("stack underflow");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<PickleValue*> Top() {
    if (stack_.size() <= Floor()) return Corrupt("stack underflow");
    return stack_.back();
  }
  // Removes the values above the last MARK and the MARK.
  absl::StatusOr<std::vector<PickleValue*>> PopMark() {
    if (marks_.empty()) return Corrupt("no MARK on the stack");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + mark, stack_.end());
    stack_.resize(mark);
    return items;
  }
  absl::Status PushTuple(const std::vector<PickleValue*>& items) {
    PickleValue* t;
    if (absl::Status s = PushNew(Kind::kTuple, &t); !s.ok()) return s;
    t->items.assign(items.begin(), items.end());
    return absl::OkStatus();
  }
  absl::Status PopTuple(int n) {
    if (stack_.size() < Floor() + n) return Corrupt("stack underflow");
    std::vector<PickleValue*> items(stack_.end() - n, stack_.end());
    stack_.resize(stack_.size() - n);
    return PushTuple(items);
  }
  absl::Status PushString(std::string s) {
    PickleValue* v;
    if (absl::Status st = PushNew(Kind::kString, &v); !st.ok()) return st;
    v->string_value = std::move(s);
    return absl::OkStatus();
  }
  absl::Status PushInt(int64_t i) {
    PickleValue* v;
    if (absl::Status st = PushNew(Kind::kInt, &v); !st.ok()) return st;
    v->int_value = i;
    return absl::OkStatus();
  }
  absl::Status PushGlobal(const std::string& module, const std::string& name,
                          absl::string_view opcode) {
    std::string full = absl::StrCat(module, ".", name);
    if (options_.allowed_globals.count(full) == 0) {
      return Refused(absl::StrCat("global ", full.size() > 200 ? full.substr(0, 200) + "..." : full,
                                  " (", opcode,
                                  ") is not allowed: a pickle can run code, and "
                                  "only the globals of a PyTorch state dict are accepted"));
    }
    PickleValue* v;
    if (absl::Status st = PushNew(Kind::kGlobal, &v); !st.ok()) return st;
    v->string_value = std::move(full);
    return absl::OkStatus();
  }
  absl::Status Memoize(uint64_t index) {
    if (stack_.size() <= Floor()) return Corrupt("memo of an empty stack");
    if (memo_.count(index) == 0 && static_cast<int64_t>(memo_.size()) >= options_.max_memo) {
      return Corrupt(absl::StrCat("memo larger than ", options_.max_memo));
    }
    memo_[index] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Recall(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Corrupt(absl::StrCat("memo ", index, " is not set"));
    return Push(it->second);
  }
  absl::Status SetItems(PickleValue* dict, const std::vector<PickleValue*>& items) {
    if (dict->kind != Kind::kDict) {
      return Corrupt(absl::StrCat("SETITEM(S) on a ", PickleKindName(dict->kind)));
    }
    if (items.size() % 2 != 0) return Corrupt("SETITEMS with an odd number of values");
    for (size_t i = 0; i < items.size(); i += 2) dict->entries.emplace_back(items[i], items[i + 1]);
    return absl::OkStatus();
  }
  absl::Status Append(PickleValue* list, const std::vector<PickleValue*>& items) {
    if (list->kind != Kind::kList) {
      return Corrupt(absl::StrCat("APPEND(S) on a ", PickleKindName(list->kind)));
    }
    list->items.insert(list->items.end(), items.begin(), items.end());
    return absl::OkStatus();
  }

  absl::Status Step(uint8_t op, bool& stop);

  absl::string_view data_;
  const UnpickleOptions& options_;
  absl::string_view where_;
  size_t pos_ = 0;
  size_t op_offset_ = 0;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  Pickle pickle_;
};

#define PICKLE_TRY(expr)                               \
  do {                                                 \
    if (absl::Status s_ = (expr); !s_.ok()) return s_; \
  } while (false)
#define PICKLE_ASSIGN(lhs, expr)                \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = std::move(*lhs##_or)

absl::Status Unpickler::Step(uint8_t op, bool& stop) {
  switch (op) {
    case 0x80: {  // PROTO
      PICKLE_ASSIGN(version, Little(1));
      if (version < 2 || version > 5) {
        return Corrupt(absl::StrCat("pickle protocol ", version, " (2 to 5 are read)"));
      }
      return absl::OkStatus();
    }
    case 0x95: {  // FRAME: a length prefix only; the opcodes follow
      PICKLE_ASSIGN(length, Little(8));
      return Need(length);
    }
    case '}':
      return PushNew(Kind::kDict);
    case ']':
      return PushNew(Kind::kList);
    case ')':
      return PushTuple({});
    case '(':
      if (static_cast<int64_t>(stack_.size() + marks_.size()) >= options_.max_stack) {
        return Corrupt(absl::StrCat("stack deeper than ", options_.max_stack));
      }
      marks_.push_back(stack_.size());
      return absl::OkStatus();
    case 0x8c: {  // SHORT_BINUNICODE
      PICKLE_ASSIGN(n, Little(1));
      PICKLE_ASSIGN(s, Bytes(n));
      return PushString(std::move(s));
    }
    case 'X': {  // BINUNICODE
      PICKLE_ASSIGN(n, Little(4));
      PICKLE_ASSIGN(s, Bytes(n));
      return PushString(std::move(s));
    }
    case 0x8d: {  // BINUNICODE8
      PICKLE_ASSIGN(n, Little(8));
      PICKLE_ASSIGN(s, Bytes(n));
      return PushString(std::move(s));
    }
    case 'K': {  // BININT1
      PICKLE_ASSIGN(v, Little(1));
      return PushInt(static_cast<int64_t>(v));
    }
    case 'M': {  // BININT2
      PICKLE_ASSIGN(v, Little(2));
      return PushInt(static_cast<int64_t>(v));
    }
    case 'J': {  // BININT
      PICKLE_ASSIGN(v, Little(4));
      return PushInt(static_cast<int32_t>(static_cast<uint32_t>(v)));
    }
    case 0x8a: {  // LONG1: little-endian two's complement of n bytes
      PICKLE_ASSIGN(n, Little(1));
      if (n > 8) return Corrupt(absl::StrCat("LONG1 of ", n, " bytes does not fit 64 bits"));
      PICKLE_ASSIGN(v, Little(static_cast<int>(n)));
      if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
      return PushInt(static_cast<int64_t>(v));
    }
    case 'G': {  // BINFLOAT: big-endian double
      PICKLE_TRY(Need(8));
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<uint8_t>(data_[pos_ + i]);
      pos_ += 8;
      PickleValue* v;
      PICKLE_TRY(PushNew(Kind::kFloat, &v));
      std::memcpy(&v->float_value, &bits, sizeof(bits));
      return absl::OkStatus();
    }
    case 0x88:
    case 0x89: {  // NEWTRUE, NEWFALSE
      PickleValue* v;
      PICKLE_TRY(PushNew(Kind::kBool, &v));
      v->bool_value = op == 0x88;
      return absl::OkStatus();
    }
    case 'N':
      return PushNew(Kind::kNone);
    case 't': {
      PICKLE_ASSIGN(items, PopMark());
      return PushTuple(items);
    }
    case 0x85:
      return PopTuple(1);
    case 0x86:
      return PopTuple(2);
    case 0x87:
      return PopTuple(3);
    case 's': {  // SETITEM
      PICKLE_ASSIGN(value, Pop());
      PICKLE_ASSIGN(key, Pop());
      PICKLE_ASSIGN(dict, Top());
      return SetItems(dict, {key, value});
    }
    case 'u': {  // SETITEMS
      PICKLE_ASSIGN(items, PopMark());
      PICKLE_ASSIGN(dict, Top());
      return SetItems(dict, items);
    }
    case 'a': {  // APPEND
      PICKLE_ASSIGN(value, Pop());
      PICKLE_ASSIGN(list, Top());
      return Append(list, {value});
    }
    case 'e': {  // APPENDS
      PICKLE_ASSIGN(items, PopMark());
      PICKLE_ASSIGN(list, Top());
      return Append(list, items);
    }
    case 'q': {  // BINPUT
      PICKLE_ASSIGN(index, Little(1));
      return Memoize(index);
    }
    case 'r': {  // LONG_BINPUT
      PICKLE_ASSIGN(index, Little(4));
      return Memoize(index);
    }
    case 0x94:  // MEMOIZE
      return Memoize(memo_.size());
    case 'h': {  // BINGET
      PICKLE_ASSIGN(index, Little(1));
      return Recall(index);
    }
    case 'j': {  // LONG_BINGET
      PICKLE_ASSIGN(index, Little(4));
      return Recall(index);
    }
    case 'c': {  // GLOBAL "module\nname\n"
      PICKLE_ASSIGN(module, Line());
      PICKLE_ASSIGN(name, Line());
      return PushGlobal(module, name, "GLOBAL");
    }
    case 0x93: {  // STACK_GLOBAL
      PICKLE_ASSIGN(name, Pop());
      PICKLE_ASSIGN(module, Pop());
      if (name->kind != Kind::kString || module->kind != Kind::kString) {
        return Corrupt("STACK_GLOBAL of values that are not strings");
      }
      return PushGlobal(module->string_value, name->string_value, "STACK_GLOBAL");
    }
    case 'R': {  // REDUCE: recorded, never called
      PICKLE_ASSIGN(args, Pop());
      PICKLE_ASSIGN(callable, Pop());
      if (callable->kind != Kind::kGlobal) {
        return Corrupt(absl::StrCat("REDUCE of a ", PickleKindName(callable->kind)));
      }
      if (args->kind != Kind::kTuple) {
        return Corrupt(
            absl::StrCat("REDUCE with arguments that are a ", PickleKindName(args->kind)));
      }
      if (callable->string_value == "collections.OrderedDict" && args->items.empty()) {
        return PushNew(Kind::kDict);
      }
      PickleValue* call;
      PICKLE_TRY(PushNew(Kind::kCall, &call));
      call->items = {callable, args};
      return absl::OkStatus();
    }
    case 'b': {  // BUILD: only the attributes torch.save sets on an OrderedDict (_metadata)
      PICKLE_ASSIGN(state, Pop());
      PICKLE_ASSIGN(target, Top());
      (void)state;
      if (target->kind != Kind::kDict) {
        return Refused(
            absl::StrCat("opcode BUILD on a ", PickleKindName(target->kind), " is not allowed"));
      }
      return absl::OkStatus();
    }
    case 'Q': {  // BINPERSID
      PICKLE_ASSIGN(id, Pop());
      PickleValue* v;
      PICKLE_TRY(PushNew(Kind::kPersistentId, &v));
      v->items = {id};
      return absl::OkStatus();
    }
    case '.': {  // STOP
      PICKLE_ASSIGN(root, Pop());
      pickle_.root_ = root;
      stop = true;
      return absl::OkStatus();
    }
    default: {
      const absl::string_view name = RefusedOpcodeName(op);
      if (!name.empty()) {
        return Refused(
            absl::StrFormat("opcode %s (0x%02x) is not allowed in a state dict", name, op));
      }
      return Corrupt(absl::StrFormat("unknown opcode 0x%02x", op));
    }
  }
}

#undef PICKLE_TRY
#undef PICKLE_ASSIGN

absl::StatusOr<Pickle> Unpickler::Run() {
  bool stop = false;
  while (!stop) {
    op_offset_ = pos_;
    if (pos_ >= data_.size()) return Corrupt("truncated: no STOP opcode");
    const uint8_t op = static_cast<uint8_t>(data_[pos_++]);
    if (absl::Status s = Step(op, stop); !s.ok()) return s;
  }
  return std::move(pickle_);
}

absl::StatusOr<Pickle> Unpickle(absl::string_view data, const UnpickleOptions& options,
                                absl::string_view where) {
  return Unpickler(data, options, where).Run();
}

}  // namespace rosetta
