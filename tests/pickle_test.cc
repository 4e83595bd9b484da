// The restricted unpickler on hand-written pickles: the values a state dict uses, the globals and
// opcodes it refuses, truncated input.
#include "engine/pickle.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rosetta {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using Kind = PickleValue::Kind;

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

UnpickleOptions TorchLikeOptions() {
  UnpickleOptions o;
  o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"};
  return o;
}

absl::StatusOr<Pickle> Read(const std::string& data) {
  return Unpickle(data, TorchLikeOptions(), "test.pkl");
}
// A string literal with its NUL bytes (pickles are binary).
template <size_t N>
std::string P(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}
template <size_t N>
absl::StatusOr<Pickle> Read(const char (&literal)[N]) {
  return Read(P(literal));
}

TEST(PickleTest, ReadsTheValuesOfAStateDict) {
  // {"a": (1, 300, -2, -129, 2**40, 1.5, True, None), "b": [7, 7 (memo)]} as protocol 2.
  std::string p =
      P("\x80\x02}q\x00(X\x01\x00\x00\x00"
        "a(K\x01M\x2c\x01J");
  p += Bytes({0xfe, 0xff, 0xff, 0xff});
  p += P("\x8a\x02") + Bytes({0x7f, 0xff});             // LONG1 -129
  p += P("\x8a\x06") + Bytes({0, 0, 0, 0, 0, 1});       // LONG1 2**40
  p += P("G") + Bytes({0x3f, 0xf8, 0, 0, 0, 0, 0, 0});  // BINFLOAT 1.5
  p += "\x88Nt\x8c\x01"
       "b]q\x01(K\x07q\x02h\x02"
       "eu.";
  absl::StatusOr<Pickle> pickle = Read(p);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const PickleValue& root = pickle->root();
  ASSERT_TRUE(root.is(Kind::kDict));
  ASSERT_EQ(root.entries.size(), 2u);
  EXPECT_EQ(root.entries[0].first->string_value, "a");
  const PickleValue& t = *root.entries[0].second;
  ASSERT_TRUE(t.is(Kind::kTuple));
  ASSERT_EQ(t.items.size(), 8u);
  EXPECT_EQ(t.items[0]->int_value, 1);
  EXPECT_EQ(t.items[1]->int_value, 300);
  EXPECT_EQ(t.items[2]->int_value, -2);
  EXPECT_EQ(t.items[3]->int_value, -129);
  EXPECT_EQ(t.items[4]->int_value, int64_t{1} << 40);
  EXPECT_EQ(t.items[5]->float_value, 1.5);
  EXPECT_TRUE(t.items[6]->is(Kind::kBool) && t.items[6]->bool_value);
  EXPECT_TRUE(t.items[7]->is(Kind::kNone));
  const PickleValue& list = *root.entries[1].second;
  ASSERT_TRUE(list.is(Kind::kList));
  ASSERT_EQ(list.items.size(), 2u);
  EXPECT_EQ(list.items[0], list.items[1]);  // BINGET returns the memoized value itself
  EXPECT_EQ(list.items[1]->int_value, 7);
}

TEST(PickleTest, ReduceOfAnAllowedGlobalIsRecordedNotCalled) {
  const std::string p =
      "\x80\x02"
      "ctorch._utils\n_rebuild_tensor_v2\n(K\x01K\x02tR"
      "ccollections\nOrderedDict\n)R\x86.";
  absl::StatusOr<Pickle> pickle = Read(p);
  ASSERT_TRUE(pickle.ok()) << pickle.status();
  const PickleValue& root = pickle->root();
  ASSERT_EQ(root.items.size(), 2u);
  EXPECT_TRUE(root.items[0]->IsCallOf("torch._utils._rebuild_tensor_v2"));
  EXPECT_EQ(root.items[0]->items[1]->items.size(), 2u);
  EXPECT_TRUE(root.items[1]->is(Kind::kDict));  // OrderedDict() is the one call made
}

TEST(PickleTest, RefusesGlobalsOutsideTheAllowList) {
  // os.system("echo") with GLOBAL + REDUCE, the classic exploit.
  absl::StatusOr<Pickle> p = Read(
      "\x80\x02"
      "cos\nsystem\nq\x00X\x04\x00\x00\x00"
      "echo\x85R.");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(p.status().message(), AllOf(HasSubstr("test.pkl"), HasSubstr("byte 2"),
                                          HasSubstr("global os.system"), HasSubstr("GLOBAL")));
  // builtins.eval("1") with STACK_GLOBAL (protocol 4).
  p = Read(
      "\x80\x04\x8c\x08"
      "builtins\x8c\x04"
      "eval\x93\x8c\x01"
      "1\x85R.");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(p.status().message(), AllOf(HasSubstr("builtins.eval"), HasSubstr("STACK_GLOBAL")));
  // subprocess.Popen hidden as the value of a state dict entry.
  p = Read(
      "\x80\x02"
      "ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00"
      "a"
      "csubprocess\nPopen\n)Ru.");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(p.status().message(), HasSubstr("subprocess.Popen"));
  // A module name that only starts like an allowed one.
  p = Read(
      "\x80\x02"
      "ccollections.abc\nOrderedDict\n.");
  EXPECT_THAT(p.status().message(), HasSubstr("collections.abc.OrderedDict"));
}

TEST(PickleTest, RefusesOpcodesAStateDictDoesNotUse) {
  const std::pair<std::string, std::string> cases[] = {
      {P("\x80\x02(X\x01\x00\x00\x00"
         "aios\nsystem\n."),
       "INST"},
      {"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"},
      {"\x80\x02"
       "ccollections\nOrderedDict\n)\x81.",
       "NEWOBJ"},
      {"\x80\x02\x82\x01.", "EXT1"},
      {"\x80\x02]]b.", "BUILD on a list"},
      {"\x80\x02S'x'\n.", "STRING"},
      {"\x80\x02"
       "K\x01"
       "0.",
       "POP"},
  };
  for (const auto& [data, opcode] : cases) {
    absl::StatusOr<Pickle> p = Read(data);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kPermissionDenied) << opcode;
    EXPECT_THAT(p.status().message(), HasSubstr(opcode));
  }
  absl::StatusOr<Pickle> p = Read("\x80\x02\xff.");
  EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(p.status().message(), HasSubstr("unknown opcode 0xff"));
  EXPECT_THAT(Read("\x80\x07N.").status().message(), HasSubstr("protocol 7"));
}

TEST(PickleTest, MalformedAndTruncatedInputIsAnError) {
  const std::string good =
      P("\x80\x02}q\x00(X\x03\x00\x00\x00"
        "abc]q\x01(K\x01K\x02"
        "eu.");
  ASSERT_TRUE(Read(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    absl::StatusOr<Pickle> p = Read(good.substr(0, n));
    EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss) << n;
  }
  // A string longer than the data, a memo never set, popping below a MARK, SETITEM on a list.
  EXPECT_THAT(Read("\x80\x02X\xff\xff\xff\x7f"
                   "abc.")
                  .status()
                  .message(),
              HasSubstr("truncated"));
  EXPECT_THAT(Read("\x80\x02h\x05.").status().message(), HasSubstr("memo 5 is not set"));
  EXPECT_THAT(Read("\x80\x02K\x01(\x85.").status().message(), HasSubstr("underflow"));
  EXPECT_THAT(Read("\x80\x02]K\x01K\x02s.").status().message(), HasSubstr("SETITEM(S) on a list"));
  EXPECT_THAT(Read("\x80\x02\x8a\x09" + std::string(9, '\x01') + ".").status().message(),
              HasSubstr("64 bits"));
}

TEST(PickleTest, LimitsBoundHostileInput) {
  UnpickleOptions options = TorchLikeOptions();
  options.max_stack = 100;
  absl::StatusOr<Pickle> p = Unpickle(std::string(200, '(') + ".", options, "deep.pkl");
  EXPECT_THAT(p.status().message(), HasSubstr("stack deeper than 100"));
  options.max_values = 50;
  p = Unpickle("\x80\x02]" + std::string(100, ']') + ".", options, "many.pkl");
  EXPECT_THAT(p.status().message(), HasSubstr("more than 50 values"));
  // A list that holds itself is fine: values live in an arena, nothing is freed recursively.
  p = Read(
      "\x80\x02]q\x00h\x00"
      "a.");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->root().items[0], &p->root());
}

}  // namespace
}  // namespace rosetta
