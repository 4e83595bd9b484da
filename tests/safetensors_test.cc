// Tests of engine/safetensors.h and the float conversions of engine/tensor_file.h, on small files
// written by the tests.
#include "engine/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/tensor_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::rosetta::testing::MakeTempDir;
using ::rosetta::testing::WriteFile;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A safetensors file: 8-byte little-endian header length, the JSON header, the data.
std::string Safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string Bytes(const std::vector<float>& values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

std::string Bytes(const std::vector<uint16_t>& values) {
  std::string out;
  for (uint16_t v : values) {
    out.push_back(static_cast<char>(v & 0xff));
    out.push_back(static_cast<char>(v >> 8));
  }
  return out;
}

// Writes `content` into a fresh file and returns its path.
std::string WriteTemp(const std::string& name, const std::string& content) {
  const std::string path = MakeTempDir("safetensors") + "/" + name;
  WriteFile(path, content);
  return path;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// ---------------------------------------------------------------------------------------------
// Conversions

TEST(HalfToFloatTest, Values) {
  EXPECT_EQ(HalfToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
  EXPECT_EQ(HalfToFloat(0x8000), 0.0f);
  EXPECT_EQ(HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xBC00), -1.0f);
  EXPECT_EQ(HalfToFloat(0xC000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x3800), 0.5f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x7BFF), 65504.0f);  // largest finite
  EXPECT_EQ(HalfToFloat(0xFBFF), -65504.0f);
  EXPECT_EQ(HalfToFloat(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  // Subnormals: m * 2^-24.
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x0002), std::ldexp(1.0f, -23));
  EXPECT_EQ(HalfToFloat(0x0155), std::ldexp(341.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(HalfToFloat(0x83FF), -std::ldexp(1023.0f, -24));
  // Infinities and NaN.
  EXPECT_EQ(HalfToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(HalfToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7C01)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0xFE00)));
}

TEST(HalfToFloatTest, AllFiniteValuesMatchTheFormula) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const int exponent = (h >> 10) & 0x1f;
    if (exponent == 0x1f) continue;
    const int mantissa = h & 0x3ff;
    double expected =
        exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, exponent - 25);
    if (h & 0x8000) expected = -expected;
    ASSERT_EQ(HalfToFloat(static_cast<uint16_t>(h)), static_cast<float>(expected))
        << "half 0x" << std::hex << h;
  }
}

TEST(BFloat16ToFloatTest, Values) {
  EXPECT_EQ(BFloat16ToFloat(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(BFloat16ToFloat(0x8000)));
  EXPECT_EQ(BFloat16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xBF80), -1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xC020), -2.5f);
  EXPECT_EQ(BFloat16ToFloat(0x4049), 3.140625f);
  EXPECT_EQ(BFloat16ToFloat(0x7F7F), 3.3895313892515355e38f);  // largest finite
  EXPECT_EQ(BFloat16ToFloat(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
  EXPECT_EQ(BFloat16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BFloat16ToFloat(0xFF80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(0x7FC0)));
}

// ---------------------------------------------------------------------------------------------
// Reading

TEST(ReadSafetensorsTest, ReadsF32F16AndBF16) {
  const std::vector<float> f32 = {1.5f, -2.0f, 0.0f, 3.25f, -1e-3f, 1e20f};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x03FF,
                                     0x7C00, 0xFC00, 0x7BFF, 0x8000};
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC020, 0x4049, 0x7F80};
  // Data in an order different from the header's: f16 [0, 16), bf16 [16, 24), a one-element F16
  // [24, 26), then f32 [26, 50), at an offset that is not a multiple of 4.
  const std::string data =
      Bytes(f16) + Bytes(bf16) + Bytes(std::vector<uint16_t>{0x3800}) + Bytes(f32);
  const std::string header =
      absl::StrCat(R"({"__metadata__": {"format": "pt"},)",
                   R"("w.f32": {"dtype": "F32", "shape": [2, 3], "data_offsets": [26, 50]},)",
                   R"("w.f16": {"dtype": "F16", "shape": [8], "data_offsets": [0, 16]},)",
                   R"("w.bf16": {"dtype": "BF16", "shape": [2, 1, 2], "data_offsets": [16, 24]},)",
                   R"("w.scalar": {"dtype": "F16", "shape": [], "data_offsets": [24, 26]}})");
  const std::string path = WriteTemp("model.safetensors", Safetensors(header, data));

  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->tensors().size(), 4u);
  EXPECT_FALSE((*file)->Contains("__metadata__"));
  EXPECT_TRUE((*file)->Contains("w.f32"));

  const RawTensor* raw = (*file)->Find("w.bf16");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->dtype, DType::kBFloat16);
  EXPECT_THAT(raw->shape, ElementsAre(2, 1, 2));
  EXPECT_EQ(raw->num_bytes, 8u);
  EXPECT_EQ(raw->num_elements(), 4);
  EXPECT_EQ((*file)->Find("absent"), nullptr);

  absl::StatusOr<AlignedVector<float>> a = (*file)->ReadFloat("w.f32", {2, 3});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(*a, ElementsAre(1.5f, -2.0f, 0.0f, 3.25f, -1e-3f, 1e20f));

  absl::StatusOr<AlignedVector<float>> h = (*file)->ReadFloat("w.f16", {});
  ASSERT_TRUE(h.ok()) << h.status();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_THAT(*h, ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24), std::ldexp(1023.0f, -24), inf,
                              -inf, 65504.0f, 0.0f));
  EXPECT_TRUE(std::signbit((*h)[7]));

  absl::StatusOr<AlignedVector<float>> b = (*file)->ReadFloat("w.bf16", {2, 1, 2});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(*b, ElementsAre(1.0f, -2.5f, 3.140625f, inf));

  absl::StatusOr<AlignedVector<float>> s = (*file)->ReadFloat("w.scalar", {});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(*s, ElementsAre(0.5f));
}

TEST(ReadSafetensorsTest, HeaderPaddedWithSpaces) {
  // Writers pad the header with spaces to align the data.
  const std::string header =
      R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})" + std::string(13, ' ');
  const std::string path =
      WriteTemp("padded.safetensors", Safetensors(header, Bytes(std::vector<float>{7.0f})));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<AlignedVector<float>> x = (*file)->ReadFloat("x", {1});
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_THAT(*x, ElementsAre(7.0f));
}

// Regression (fixed): TensorFile::ReadFloat, case DType::kFloat32, once called
// `std::memcpy(out.data(), t->data, n * sizeof(float))` with n == 0 passes out.data() == nullptr
// (an empty AlignedVector) to memcpy, which is undefined behaviour even for 0 bytes. Passes in the
// Release build, but with -DROSETTA_SANITIZE=ON UBSan reports "tensor_file.cc: runtime error: null
// pointer passed as argument 1, which is declared to never be null" and aborts the test binary.
TEST(ReadSafetensorsTest, EmptyTensor) {
  const std::string header = R"({"e": {"dtype": "F32", "shape": [0, 4], "data_offsets": [4, 4]},)"
                             R"( "h": {"dtype": "F16", "shape": [3, 0], "data_offsets": [4, 4]},)"
                             R"( "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  const std::string path =
      WriteTemp("empty.safetensors", Safetensors(header, Bytes(std::vector<float>{7.0f})));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("e")->num_elements(), 0);
  absl::StatusOr<AlignedVector<float>> h = (*file)->ReadFloat("h", {3, 0});
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(h->empty());
  absl::StatusOr<AlignedVector<float>> e = (*file)->ReadFloat("e", {0, 4});
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(e->empty());
}

TEST(ReadSafetensorsTest, OnlyMetadata) {
  const std::string path = WriteTemp(
      "meta.safetensors", Safetensors(R"({"__metadata__": {"format": "pt", "x": "y"}})", ""));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(ReadSafetensorsTest, IntegerTensorsAreReadButNotAsFloat) {
  const std::string header = R"({"ids": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},)"
                             R"( "mask": {"dtype": "BOOL", "shape": [3], "data_offsets": [8, 11]},)"
                             R"( "big": {"dtype": "I64", "shape": [1], "data_offsets": [11, 19]}})";
  const std::string path =
      WriteTemp("ints.safetensors", Safetensors(header, std::string(19, '\1')));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Find("ids")->dtype, DType::kInt32);
  EXPECT_EQ((*file)->Find("mask")->dtype, DType::kBool);
  EXPECT_EQ((*file)->Find("big")->dtype, DType::kInt64);
  absl::StatusOr<AlignedVector<float>> ids = (*file)->ReadFloat("ids", {2});
  ASSERT_FALSE(ids.ok());
  EXPECT_THAT(Message(ids.status()), AllOf(HasSubstr(path), HasSubstr("ids"), HasSubstr("int32")));
}

TEST(TensorFileTest, ReadFloatWithWrongShapeNamesTensorAndBothShapes) {
  const std::string header =
      R"({"enc.w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})";
  const std::string path =
      WriteTemp("shape.safetensors", Safetensors(header, Bytes(std::vector<float>(6, 1.0f))));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<AlignedVector<float>> w = (*file)->ReadFloat("enc.w", {3, 2});
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(Message(w.status()),
              AllOf(HasSubstr(path), HasSubstr("enc.w"), HasSubstr("[2, 3]"), HasSubstr("[3, 2]")));
  // Same number of elements, different rank: still an error.
  EXPECT_FALSE((*file)->ReadFloat("enc.w", {6}).ok());
  EXPECT_FALSE((*file)->ReadFloat("enc.w", {1, 2, 3}).ok());
}

TEST(TensorFileTest, MissingTensorIsNotFoundNamingIt) {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  const std::string path =
      WriteTemp("missing.safetensors", Safetensors(header, Bytes(std::vector<float>{1.0f})));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<AlignedVector<float>> w = (*file)->ReadFloat("decoder.missing_weight", {});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(w.status()), AllOf(HasSubstr(path), HasSubstr("decoder.missing_weight")));
}

TEST(TensorFileTest, TensorErrorFormat) {
  const std::string path = WriteTemp("err.safetensors", Safetensors("{}", ""));
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(Message((*file)->TensorError("t.x", "went wrong")),
            absl::StrCat(path, ": tensor t.x: went wrong"));
}

// ---------------------------------------------------------------------------------------------
// Errors: statuses naming the file (and the tensor), never crashes.

// Reads `content` written to a file; expects an error whose message names the file and contains
// every one of `parts`.
void ExpectError(const std::string& content, const std::vector<std::string>& parts) {
  const std::string path = WriteTemp("bad.safetensors", content);
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_FALSE(file.ok()) << "accepted a bad file";
  EXPECT_THAT(Message(file.status()), HasSubstr(path));
  for (const std::string& part : parts) EXPECT_THAT(Message(file.status()), HasSubstr(part));
}

TEST(ReadSafetensorsErrorTest, MissingFile) {
  const std::string path = MakeTempDir("none") + "/absent.safetensors";
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(file.status()), HasSubstr(path));
}

TEST(ReadSafetensorsErrorTest, Directory) {
  const std::string dir = MakeTempDir("dir");
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadSafetensors(dir);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(Message(file.status()), HasSubstr(dir));
}

TEST(ReadSafetensorsErrorTest, ShorterThanEightBytes) {
  ExpectError("", {});
  ExpectError("abc", {});
  ExpectError(std::string(7, '\0'), {});
}

TEST(ReadSafetensorsErrorTest, HeaderLengthBeyondTheFile) {
  std::string content = Safetensors(R"({"a": 1})", "");
  content[0] = 100;  // claims 100 bytes of header, 8 are there
  ExpectError(content, {"100"});
  // A length whose sum with 8 overflows.
  std::string huge = Safetensors("{}", "");
  for (int i = 0; i < 8; ++i) huge[i] = '\xff';
  ExpectError(huge, {});
  std::string almost = Safetensors("{}", "");
  for (int i = 0; i < 8; ++i) almost[i] = '\xff';
  almost[0] = '\xf9';  // 2^64 - 7: header_size + 8 wraps to 1
  ExpectError(almost, {});
}

TEST(ReadSafetensorsErrorTest, InvalidJson) {
  ExpectError(Safetensors(R"({"a": {"dtype": "F32",)", ""), {"JSON"});
  ExpectError(Safetensors("not json at all", ""), {"JSON"});
  ExpectError(Safetensors("", ""), {});
}

TEST(ReadSafetensorsErrorTest, HeaderNotAnObject) {
  ExpectError(Safetensors("[1, 2, 3]", ""), {});
  ExpectError(Safetensors("42", ""), {});
}

TEST(ReadSafetensorsErrorTest, MalformedEntries) {
  const std::string data = Bytes(std::vector<float>{1.0f, 2.0f});
  for (const std::string entry : {
           R"("w": 3)",
           R"("w": {"shape": [2], "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": [2]})",
           R"("w": {"dtype": 1, "shape": [2], "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0]})",
           R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]})",
           R"("w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]})",
           R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [-1, 7]})",
           R"("w": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]})",
       }) {
    SCOPED_TRACE(entry);
    ExpectError(Safetensors("{" + entry + "}", data), {"tensor w"});
  }
}

TEST(ReadSafetensorsErrorTest, DataOffsetsBeyondTheData) {
  // A truncated file: the header promises 24 bytes, 20 are there.
  const std::string header =
      R"({"a.b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})";
  const std::string full = Safetensors(header, Bytes(std::vector<float>(6, 1.0f)));
  ExpectError(full.substr(0, full.size() - 4), {"a.b", "truncated"});
  // Begin beyond the data; begin after end.
  ExpectError(Safetensors(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [100, 104]}})",
                          Bytes(std::vector<float>{1.0f})),
              {"tensor t"});
  ExpectError(Safetensors(R"({"t": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})",
                          Bytes(std::vector<float>(2, 0.0f))),
              {"tensor t"});
  // Offsets so large that begin + size would wrap.
  ExpectError(Safetensors(R"({"t": {"dtype": "F32", "shape": [1], )"
                          R"("data_offsets": [18446744073709551612, 18446744073709551615]}})",
                          Bytes(std::vector<float>{1.0f})),
              {"tensor t"});
}

TEST(ReadSafetensorsErrorTest, ByteSizeNotMatchingShapeAndDType) {
  const std::string data = Bytes(std::vector<float>(8, 0.0f));
  ExpectError(
      Safetensors(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", data),
      {"tensor w", "[2, 3]", "float32"});
  // The right byte count for F32 but not for F16.
  ExpectError(
      Safetensors(R"({"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 24]}})", data),
      {"tensor w", "float16"});
  ExpectError(
      Safetensors(R"({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 4]}})", data),
      {"tensor w"});
}

// Regression (fixed): ReadSafetensors once computed the expected byte size as
// RawTensor::num_elements() (an int64 product of the dims, engine/tensor_file.cc) times the dtype
// size, with no overflow check. A shape whose product overflows wraps around: shape
// [4294967296, 4294967296] F32 with data_offsets [0, 0] gives 2^64 -> 0 elements, 0 bytes, and is
// accepted (signed overflow, undefined behaviour), as is [2305843009213693953, 8] F32 with 32
// bytes (2^64 + 8 elements -> 8). The declared shape is then far larger than the data behind it.
TEST(ReadSafetensorsErrorTest, ShapeWhoseSizeOverflows) {
  ExpectError(Safetensors(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], )"
                          R"("data_offsets": [0, 0]}})",
                          ""),
              {"tensor w"});
  ExpectError(Safetensors(R"({"w": {"dtype": "F32", "shape": [2305843009213693953, 8], )"
                          R"("data_offsets": [0, 32]}})",
                          Bytes(std::vector<float>(8, 1.0f))),
              {"tensor w"});
}

TEST(ReadSafetensorsErrorTest, UnknownDType) {
  const std::string data = Bytes(std::vector<float>(4, 0.0f));
  ExpectError(
      Safetensors(R"({"x.y": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 1]}})", data),
      {"tensor x.y", "Q4_K"});
  ExpectError(
      Safetensors(R"({"x.y": {"dtype": "f32", "shape": [2], "data_offsets": [0, 8]}})", data),
      {"tensor x.y", "f32"});
}

TEST(ReadSafetensorsErrorTest, OneBadTensorAmongGoodOnes) {
  const std::string header = R"({"good": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                             R"( "bad": {"dtype": "F32", "shape": [2], "data_offsets": [4, 16]}})";
  ExpectError(Safetensors(header, Bytes(std::vector<float>(4, 0.0f))), {"tensor bad"});
}

}  // namespace
}  // namespace rosetta
