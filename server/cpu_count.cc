#include "server/cpu_count.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace rosetta::server {

namespace {

std::optional<int> QuotaCpus(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  return static_cast<int>(std::max<int64_t>(1, (quota + period - 1) / period));
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

std::optional<int> CpusFromCgroupV2(absl::string_view cpu_max) {
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(cpu_max), ' ', absl::SkipEmpty());
  if (fields.empty() || fields[0] == "max") return std::nullopt;
  int64_t quota = 0;
  int64_t period = 100000;  // the kernel's default when only the quota is written
  if (!absl::SimpleAtoi(fields[0], &quota)) return std::nullopt;
  if (fields.size() > 1 && !absl::SimpleAtoi(fields[1], &period)) return std::nullopt;
  return QuotaCpus(quota, period);
}

std::optional<int> CpusFromCgroupV1(absl::string_view quota_us, absl::string_view period_us) {
  int64_t quota = 0;
  int64_t period = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota_us), &quota) ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(period_us), &period)) {
    return std::nullopt;
  }
  return QuotaCpus(quota, period);  // quota -1: unlimited
}

int AvailableCpus() {
  int cpus = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  std::optional<int> limit;
  if (auto v2 = ReadSmallFile("/sys/fs/cgroup/cpu.max")) {
    limit = CpusFromCgroupV2(*v2);
  } else {
    auto quota = ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us");
    auto period = ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if (quota && period) limit = CpusFromCgroupV1(*quota, *period);
  }
  return limit ? std::min(cpus, *limit) : cpus;
}

}  // namespace rosetta::server
