// rosettad's flags and config file, and the CPU count it defaults its threads to.
#include "server/daemon_options.h"

#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cpu_count.h"
#include "tests/test_util.h"

namespace rosetta::server {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<DaemonOptions> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "rosettad");
  return ParseDaemonOptions(static_cast<int>(args.size()), args.data());
}

TEST(DaemonOptionsTest, ParsesFlagsInBothForms) {
  auto options = Parse({"--model",
                        "en-de=/m/opus",
                        "--model=/models/aren/",
                        "--listen=127.0.0.1:0",
                        "--threads",
                        "3",
                        "--batching",
                        "static",
                        "--max_queued_texts=7",
                        "--max_texts_per_request",
                        "4",
                        "--kv_cache_mb",
                        "64",
                        "--encode_max_wait_ms",
                        "5",
                        "--drain_timeout",
                        "2.5",
                        "--max_tokens_per_text",
                        "100",
                        "--compute_type",
                        "bfloat16"});
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->models.size(), 2u);
  EXPECT_EQ(options->models[0].name, "en-de");
  EXPECT_EQ(options->models[0].path, "/m/opus");
  EXPECT_EQ(options->models[1].name, "aren");  // named after its directory
  auto hub = Parse({"--model", "Helsinki-NLP/opus-mt-en-de@v1.0"});
  ASSERT_TRUE(hub.ok());
  EXPECT_EQ(hub->models[0].name, "opus-mt-en-de");
  EXPECT_EQ(hub->models[0].path, "Helsinki-NLP/opus-mt-en-de@v1.0");
  EXPECT_EQ(options->listen, "127.0.0.1:0");
  EXPECT_EQ(options->threads, 3);
  EXPECT_FALSE(options->batching.continuous);
  EXPECT_EQ(options->batching.max_queued_texts, 7);
  EXPECT_EQ(options->batching.kv_cache_bytes, 64 << 20);
  EXPECT_EQ(options->batching.encode_max_wait, absl::Milliseconds(5));
  EXPECT_EQ(options->drain_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(options->limits.max_tokens_per_text, 100);
  EXPECT_EQ(options->compute_type, ComputeType::kBfloat16);
  EXPECT_EQ(Parse({"--model", "a=/x"})->compute_type, ComputeType::kFloat32);
}

TEST(DaemonOptionsTest, ComputeTypePerModel) {
  auto options = Parse({"--model", "a=/x", "--model", "b=/y", "--model", "c=/z", "--compute_type",
                        "bfloat16", "--model_compute_type", "a=int8",
                        "--model_compute_type=c=float32", "--model_compute_type", "a=float32"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(ComputeTypeFor(*options, "a"), ComputeType::kFloat32);  // the last one counts
  EXPECT_EQ(ComputeTypeFor(*options, "b"), ComputeType::kBfloat16);
  EXPECT_EQ(ComputeTypeFor(*options, "c"), ComputeType::kFloat32);
  EXPECT_THAT(Parse({"--model", "a=/x", "--model_compute_type", "int8"}).status().message(),
              HasSubstr("--model_compute_type: \"int8\" is not NAME=TYPE"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--model_compute_type", "=int8"}).status().message(),
              HasSubstr("is not NAME=TYPE"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--model_compute_type", "a=fp16"}).status().message(),
              HasSubstr("--model_compute_type: \"a=fp16\" is not NAME=TYPE with TYPE float32, "
                        "bfloat16 or int8"));
}

TEST(DaemonOptionsTest, ReadsAConfigFileThatLaterFlagsOverride) {
  const std::string dir = testing::MakeTempDir("daemon_options");
  testing::WriteFile(dir + "/rosettad.conf",
                     "# served models\nmodel = a=/models/a\n--threads=4\nmax_beam_size = 8\n");
  auto options = Parse({"--config", (dir + "/rosettad.conf").c_str(), "--threads", "2"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->models.at(0).name, "a");
  EXPECT_EQ(options->threads, 2);
  EXPECT_EQ(options->limits.max_beam_size, 8);

  testing::WriteFile(dir + "/bad.conf", "model = a=/x\nthreads four\n");
  auto bad = Parse({"--config", (dir + "/bad.conf").c_str()});
  EXPECT_THAT(bad.status().message(), HasSubstr("bad.conf:2: expected `name = value`"));
  EXPECT_TRUE(absl::IsNotFound(Parse({"--config", "/nonexistent.conf"}).status()));
}

TEST(DaemonOptionsTest, RejectsBadFlagsWithTheirName) {
  EXPECT_THAT(Parse({"--model", "a=/x", "--threads", "-1"}).status().message(),
              HasSubstr("--threads: \"-1\" is not an integer >= 0"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--batching", "dynamic"}).status().message(),
              HasSubstr("continuous or static"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--compute_type", "int4"}).status().message(),
              HasSubstr("--compute_type: \"int4\" is not float32, bfloat16 or int8"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--colour", "red"}).status().message(),
              HasSubstr("unknown flag --colour"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--listen", "nowhere"}).status().message(),
              HasSubstr("host:port"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--max_beam_size", "32"}).status().message(),
              HasSubstr("at most 16"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--max_decoding_length", "2147483647"}).status().message(),
              HasSubstr("is not an integer from 1 to 65536"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--kv_cache_mb", "9223372036854775807"}).status().message(),
              HasSubstr("--kv_cache_mb: \"9223372036854775807\" is not an integer from 1 to"));
  EXPECT_THAT(Parse({"--threads", "2"}).status().message(), HasSubstr("no model to serve"));
  EXPECT_THAT(Parse({"--model", "a=/x", "--max_queued_texts", "10"}).status().message(),
              HasSubstr("--max_texts_per_request (128) must not exceed --max_queued_texts (10)"));
  EXPECT_THAT(Parse({"--model"}).status().message(), HasSubstr("needs a value"));
  EXPECT_THAT(Parse({"stray"}).status().message(), HasSubstr("unexpected argument"));
  auto help = Parse({"--help"});
  EXPECT_TRUE(absl::IsNotFound(help.status()));
  EXPECT_THAT(help.status().message(), HasSubstr("--max_running_sequences"));
}

TEST(DaemonOptionsTest, TlsFlags) {
  auto plain = Parse({"--model", "m=/m"});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->tls.enabled());
  EXPECT_EQ(plain->tls.reload_interval, absl::Seconds(60));

  auto tls = Parse({"--model", "m=/m", "--tls_cert_file", "/c/tls.crt", "--tls_key_file=/c/tls.key",
                    "--tls_client_ca_file", "/c/ca.crt", "--tls_reload_seconds", "5"});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_TRUE(tls->tls.enabled());
  EXPECT_EQ(tls->tls.cert_file, "/c/tls.crt");
  EXPECT_EQ(tls->tls.key_file, "/c/tls.key");
  EXPECT_EQ(tls->tls.client_ca_file, "/c/ca.crt");
  EXPECT_EQ(tls->tls.reload_interval, absl::Seconds(5));

  // The files are read when the server starts; the flags must go together at once.
  EXPECT_THAT(Parse({"--model", "m=/m", "--tls_cert_file", "/c/tls.crt"}).status().message(),
              HasSubstr("--tls_cert_file needs --tls_key_file"));
  EXPECT_THAT(Parse({"--model", "m=/m", "--tls_key_file", "/c/tls.key"}).status().message(),
              HasSubstr("--tls_key_file needs --tls_cert_file"));
  EXPECT_THAT(Parse({"--model", "m=/m", "--tls_client_ca_file", "/c/ca.crt"}).status().message(),
              HasSubstr("--tls_client_ca_file needs --tls_cert_file"));
  EXPECT_THAT(Parse({"--model", "m=/m", "--tls_reload_seconds", "0"}).status().message(),
              HasSubstr("--tls_reload_seconds: \"0\" is not an integer >= 1"));
}

TEST(DaemonOptionsTest, MaxConnectionAgeAndApiKeysReload) {
  auto options = Parse({"--model", "m=/m", "--max_connection_age_seconds", "300",
                        "--max_connection_age_grace_seconds=20", "--api_keys_reload_seconds=0"});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->api_keys_reload_interval, absl::ZeroDuration());
  EXPECT_EQ(options->max_connection_age, absl::Seconds(300));
  EXPECT_EQ(options->max_connection_age_grace, absl::Seconds(20));
  auto defaults = Parse({"--model", "m=/m"});
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->api_keys_reload_interval, absl::Seconds(60));
  EXPECT_EQ(defaults->max_connection_age, absl::ZeroDuration());        // never
  EXPECT_EQ(defaults->max_connection_age_grace, absl::ZeroDuration());  // no limit
  for (const char* interval : {"0.5", "1e-9", "inf"}) {
    EXPECT_THAT(
        Parse({"--model", "m=/m", "--api_keys_reload_seconds", interval}).status().message(),
        HasSubstr("--api_keys_reload_seconds must be 0 (never) or at least 1"))
        << interval;
  }
  // Under a second (0.0004 s would be 0 ms to gRPC: every connection closed at once).
  EXPECT_THAT(
      Parse({"--model", "m=/m", "--max_connection_age_seconds", "0.0004"}).status().message(),
      HasSubstr("--max_connection_age_seconds must be 0 (never) or at least 1"));
}

TEST(CpuCountTest, ReadsCgroupQuotas) {
  EXPECT_EQ(CpusFromCgroupV2("max 100000\n"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupV2("150000 100000"), 2);  // 1.5 CPUs: round up
  EXPECT_EQ(CpusFromCgroupV2("50000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupV2("garbage"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV1("-1\n", "100000\n"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV1("400000\n", "100000\n"), 4);
  EXPECT_GE(AvailableCpus(), 1);
}

TEST(CpuCountTest, TakesTheTightestQuotaOfTheCgroupAndItsParents) {
  std::map<std::string, std::string> files;
  const FileReader read = [&files](const std::string& path) -> std::optional<std::string> {
    auto it = files.find(path);
    if (it == files.end()) return std::nullopt;
    return it->second;
  };
  // cgroup v2, a systemd service with CPUQuota=300% in a slice limited to 2 CPUs.
  const std::string v2 = "0::/system.slice/rosettad.service\n";
  EXPECT_EQ(CgroupCpuLimit(v2, read), std::nullopt);
  files["/sys/fs/cgroup/system.slice/rosettad.service/cpu.max"] = "300000 100000\n";
  EXPECT_EQ(CgroupCpuLimit(v2, read), 3);
  files["/sys/fs/cgroup/system.slice/cpu.max"] = "200000 100000\n";
  EXPECT_EQ(CgroupCpuLimit(v2, read), 2);
  // A container in its own cgroup namespace: its cgroup is the root it sees.
  files = {{"/sys/fs/cgroup/cpu.max", "150000 100000"}};
  EXPECT_EQ(CgroupCpuLimit("0::/\n", read), 2);
  // cgroup v1 without a cgroup namespace: /proc/self/cgroup shows the host's path, while the
  // container's own cgroup is mounted at the root of the cpu hierarchy.
  files = {{"/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n"},
           {"/sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n"}};
  EXPECT_EQ(CgroupCpuLimit("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n", read), 1);
  EXPECT_EQ(CgroupCpuLimit("4:memory:/docker/abc\n", read), std::nullopt);  // no cpu controller
  EXPECT_EQ(CgroupCpuLimit("garbage\n", read), std::nullopt);
  EXPECT_EQ(CgroupCpuLimit("0::relative/path\n", read), std::nullopt);  // not the kernel's form
  files = {{"/sys/fs/cgroup/cpu.max", "100000 100000"}};
  EXPECT_EQ(CgroupCpuLimit("0::/a//b/\n", read), 1);
}

}  // namespace
}  // namespace rosetta::server
