// pytorch_model.bin files written by real torch.save (tests/reference/make_pytorch_fixture.py,
// directory in ROSETTA_PYTORCH_FIXTURE) read to the same tensors as the same weights in
// safetensors; refused and corrupt checkpoints are errors, never crashes. PytorchMarianTest: a
// Marian checkpoint as pytorch_model.bin translates as its safetensors original
// (ROSETTA_MARIAN_FIXTURE, ROSETTA_PYTORCH_MARIAN).
#include "engine/pytorch_checkpoint.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/decoding.h"
#include "engine/file_util.h"
#include "engine/hf_weights.h"
#include "engine/model_loader.h"
#include "engine/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace rosetta {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Fixture(const std::string& name) {
  const char* dir = std::getenv("ROSETTA_PYTORCH_FIXTURE");
  EXPECT_NE(dir, nullptr) << "ROSETTA_PYTORCH_FIXTURE is not set";
  return JoinPath(dir == nullptr ? "" : dir, name);
}

std::unique_ptr<TensorFile> Open(absl::StatusOr<std::unique_ptr<TensorFile>> file) {
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

// Same names, dtypes, shapes and bit-identical values (after conversion to float32 for floating
// types; raw bytes otherwise).
void ExpectSameTensors(const TensorFile& got, const TensorFile& want) {
  ASSERT_EQ(got.tensors().size(), want.tensors().size()) << got.path();
  for (const auto& [name, w] : want.tensors()) {
    const RawTensor* g = got.Find(name);
    ASSERT_NE(g, nullptr) << got.path() << " lacks " << name;
    EXPECT_EQ(g->dtype, w.dtype) << name;
    EXPECT_EQ(g->shape, w.shape) << name;
    ASSERT_EQ(g->num_bytes, w.num_bytes) << name;
    if (w.dtype == DType::kInt64) {
      EXPECT_EQ(std::memcmp(g->data, w.data, w.num_bytes), 0) << name;
      continue;
    }
    absl::StatusOr<AlignedVector<float>> gv = got.ReadFloat(name, w.shape);
    absl::StatusOr<AlignedVector<float>> wv = want.ReadFloat(name, w.shape);
    ASSERT_TRUE(gv.ok() && wv.ok()) << gv.status() << wv.status();
    ASSERT_EQ(gv->size(), wv->size()) << name;
    for (size_t i = 0; i < wv->size(); ++i) {
      uint32_t a, b;  // bits, so that NaN compares equal to NaN
      std::memcpy(&a, &(*gv)[i], 4);
      std::memcpy(&b, &(*wv)[i], 4);
      ASSERT_EQ(a, b) << name << "[" << i << "]: " << (*gv)[i] << " vs " << (*wv)[i];
    }
  }
}

class DTypeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DTypeTest, LoadsTheSameTensorsAsSafetensors) {
  auto bin = Open(ReadPytorchCheckpoint(Fixture(GetParam() + "/pytorch_model.bin")));
  auto st = Open(ReadSafetensors(Fixture(GetParam() + "/model.safetensors")));
  ASSERT_TRUE(bin && st);
  ExpectSameTensors(*bin, *st);
  const DType dtype = GetParam() == "float32"   ? DType::kFloat32
                      : GetParam() == "float16" ? DType::kFloat16
                                                : DType::kBFloat16;
  EXPECT_EQ(bin->Find("layer.weight")->dtype, dtype);
  EXPECT_EQ(bin->Find("scalar")->shape, std::vector<int64_t>{});
  EXPECT_EQ(bin->Find("empty")->shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(bin->Find("position_ids")->dtype, DType::kInt64);
  // Tied weights and views point into the one copy of their storage.
  const RawTensor* weight = bin->Find("layer.weight");
  EXPECT_EQ(bin->Find("tied.weight")->data, weight->data);
  EXPECT_EQ(bin->Find("row")->data, weight->data + 10 * DTypeSize(dtype));
  EXPECT_THAT(bin->ReadFloat("position_ids", {}).status().message(),
              AllOf(HasSubstr("pytorch_model.bin: tensor position_ids"), HasSubstr("int64")));
}

INSTANTIATE_TEST_SUITE_P(PytorchCheckpointTest, DTypeTest,
                         ::testing::Values("float32", "float16", "bfloat16"));

TEST(PytorchCheckpointTest, ReadsProtocol4AndDeflatedArchives) {
  auto st = Open(ReadSafetensors(Fixture("float32/model.safetensors")));
  ASSERT_TRUE(st);
  for (const char* name : {"float32/protocol4.bin", "float32/deflated.bin"}) {
    SCOPED_TRACE(name);
    auto bin = Open(ReadPytorchCheckpoint(Fixture(name)));
    ASSERT_TRUE(bin);
    ExpectSameTensors(*bin, *st);
  }
}

TEST(PytorchCheckpointTest, ReadsShardedCheckpointsFromTheirDirectory) {
  auto st = Open(ReadSafetensors(Fixture("float32/model.safetensors")));
  ASSERT_TRUE(st);
  for (const char* dir : {"sharded_safetensors", "sharded_pytorch"}) {
    SCOPED_TRACE(dir);
    auto sharded = Open(ReadHuggingFaceWeights(Fixture(dir)));
    ASSERT_TRUE(sharded);
    EXPECT_THAT(sharded->path(), HasSubstr(".index.json"));
    ExpectSameTensors(*sharded, *st);
  }
  // The index must not point outside its directory, nor to a shard that lacks the tensor.
  const std::string dir = testing::MakeTempDir("index");
  testing::WriteFile(dir + "/model.safetensors.index.json",
                     R"({"weight_map": {"a": "../float32/model.safetensors"}})");
  EXPECT_THAT(ReadHuggingFaceWeights(dir).status().message(),
              HasSubstr("is not a plain file name"));
  std::filesystem::copy_file(Fixture("float32/model.safetensors"), dir + "/shard.safetensors");
  testing::WriteFile(dir + "/model.safetensors.index.json",
                     R"({"weight_map": {"nope": "shard.safetensors"}})");
  EXPECT_THAT(ReadHuggingFaceWeights(dir).status().message(),
              AllOf(HasSubstr("shard.safetensors: tensor nope is missing")));
  EXPECT_THAT(ReadHuggingFaceWeights(testing::MakeTempDir("empty")).status().message(),
              HasSubstr("pytorch_model.bin"));
}

TEST(PytorchCheckpointTest, RefusesAPickleThatWouldRunCode) {
  const std::string path = Fixture("bad/os_system.bin");
  absl::StatusOr<std::unique_ptr<TensorFile>> file = ReadPytorchCheckpoint(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(file.status().message(),
              AllOf(HasSubstr(path), HasSubstr("archive/data.pkl"),
                    HasSubstr("global os.system (GLOBAL) is not allowed")));
  EXPECT_FALSE(std::filesystem::exists(Fixture("bad/pwned")));
}

TEST(PytorchCheckpointTest, UnsupportedFormatsNameTheProblem) {
  EXPECT_THAT(ReadPytorchCheckpoint(Fixture("bad/float64.bin")).status().message(),
              AllOf(HasSubstr("float64.bin"), HasSubstr("tensor x"), HasSubstr("float64")));
  EXPECT_THAT(ReadPytorchCheckpoint(Fixture("bad/legacy.bin")).status().message(),
              HasSubstr("legacy torch.save format"));
  EXPECT_THAT(ReadPytorchCheckpoint(Fixture("float32/model.safetensors")).status().message(),
              HasSubstr("not a zip archive"));
}

// Every prefix length class of the archive, and random byte flips of it: errors, never crashes
// (run under AddressSanitizer in the sanitizer build).
TEST(PytorchCheckpointTest, TruncatedOrCorruptArchivesAreErrors) {
  const std::string original = testing::ReadFile(Fixture("float32/pytorch_model.bin"));
  ASSERT_GT(original.size(), 1000u);
  const std::string path = testing::MakeTempDir("corrupt") + "/pytorch_model.bin";
  int errors = 0;
  for (size_t n = 0; n < original.size(); n += 97) {
    testing::WriteFile(path, original.substr(0, n));
    EXPECT_FALSE(ReadPytorchCheckpoint(path).ok()) << n;
  }
  std::mt19937 rng(1);
  const int kTrials = 300;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::string bytes = original;
    for (int flips = 1 + rng() % 3; flips > 0; --flips)
      bytes[rng() % bytes.size()] ^= 1 << rng() % 8;
    testing::WriteFile(path, bytes);
    errors += !ReadPytorchCheckpoint(path).ok();
  }
  // Some flips land in bytes nothing reads (padding, the version entry's extra fields).
  EXPECT_GT(errors, kTrials / 2);
}

TEST(PytorchCheckpointTest, FuzzedPicklesAreErrors) {
  const std::string original = testing::ReadFile(Fixture("float32/data.pkl"));
  absl::StatusOr<std::vector<PytorchTensorRecord>> records =
      ParseStateDictPickle(original, "data.pkl");
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 12u);
  std::mt19937 rng(2);
  int errors = 0;
  const int kTrials = 3000;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::string bytes = original;
    for (int flips = 1 + rng() % 4; flips > 0; --flips) bytes[rng() % bytes.size()] = rng();
    if (trial % 4 == 0) bytes.resize(rng() % bytes.size());
    errors += !ParseStateDictPickle(bytes, "data.pkl").ok();
  }
  // Flips inside names or small ints give another valid state dict; most give errors.
  EXPECT_GT(errors, kTrials / 2);
}

// The Marian checkpoint of tests/reference/make_marian_fixture.sh, saved as pytorch_model.bin,
// translates exactly as the safetensors original (the same float32 weights).
TEST(PytorchMarianTest, TranslatesAsTheSafetensorsCheckpoint) {
  const char* marian = std::getenv("ROSETTA_MARIAN_FIXTURE");
  const char* converted = std::getenv("ROSETTA_PYTORCH_MARIAN");
  ASSERT_TRUE(marian != nullptr && converted != nullptr)
      << "ROSETTA_MARIAN_FIXTURE and ROSETTA_PYTORCH_MARIAN must be set";
  ASSERT_FALSE(FileExists(JoinPath(converted, "model.safetensors")));
  ASSERT_TRUE(FileExists(JoinPath(converted, "pytorch_model.bin")));
  absl::StatusOr<std::unique_ptr<TranslationModel>> want =
      LoadTranslationModel(JoinPath(marian, "model"));
  absl::StatusOr<std::unique_ptr<TranslationModel>> got = LoadTranslationModel(converted);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(got.ok()) << got.status();

  std::ifstream texts(JoinPath(marian, "texts.txt"));
  std::vector<std::vector<int32_t>> sources;
  for (std::string line; sources.size() < 16 && std::getline(texts, line);) {
    absl::StatusOr<std::vector<int32_t>> ids = (*want)->EncodeText(line);
    ASSERT_TRUE(ids.ok()) << ids.status();
    sources.push_back(*ids);
  }
  ASSERT_EQ(sources.size(), 16u);
  for (int beam : {1, 4}) {
    DecodingOptions options;
    options.beam_size = beam;
    options.max_length = 64;
    auto a = TranslateBatch((*got)->transformer, sources, options);
    auto b = TranslateBatch((*want)->transformer, sources, options);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    for (size_t i = 0; i < sources.size(); ++i) {
      EXPECT_EQ((*a)[i][0].tokens, (*b)[i][0].tokens) << "beam " << beam << ", sentence " << i;
      EXPECT_EQ((*a)[i][0].score, (*b)[i][0].score) << "beam " << beam << ", sentence " << i;
    }
  }
}

}  // namespace
}  // namespace rosetta
