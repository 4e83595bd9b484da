#include "server/cpu_count.h"

#include <sched.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

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

std::optional<int> CgroupCpuLimit(absl::string_view proc_self_cgroup, const FileReader& read) {
  std::optional<int> limit;
  auto bound = [&limit](std::optional<int> cpus) {
    if (cpus) limit = limit ? std::min(*limit, *cpus) : *cpus;
  };
  for (absl::string_view line : absl::StrSplit(proc_self_cgroup, '\n', absl::SkipEmpty())) {
    // "hierarchy-id:controllers:path"; the path may itself hold ':'.
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    const bool v2 = fields[0] == "0" && fields[1].empty();
    const std::vector<absl::string_view> controllers = absl::StrSplit(fields[1], ',');
    const bool v1_cpu =
        std::find(controllers.begin(), controllers.end(), "cpu") != controllers.end();
    if (!v2 && !v1_cpu) continue;
    const std::string root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/cpu";
    // The process's own cgroup and each parent: any of them may hold the quota. A path that does
    // not exist under the mount (a container without its own cgroup namespace sees the host's
    // path, with its own cgroup mounted at the root) just has no files until the root.
    std::string dir(absl::StripSuffix(absl::StripAsciiWhitespace(fields[2]), "/"));
    if (!dir.empty() && dir[0] != '/') continue;  // the kernel writes absolute paths
    for (;;) {
      const std::string base = absl::StrCat(root, dir, "/");
      if (v2) {
        if (auto cpu_max = read(base + "cpu.max")) bound(CpusFromCgroupV2(*cpu_max));
      } else {
        auto quota = read(base + "cpu.cfs_quota_us");
        auto period = read(base + "cpu.cfs_period_us");
        if (quota && period) bound(CpusFromCgroupV1(*quota, *period));
      }
      if (dir.empty()) break;
      dir.resize(dir.rfind('/'));
    }
  }
  return limit;
}

int AvailableCpus() {
  int cpus = 1;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = std::max(1, CPU_COUNT(&set));
  // Without /proc, the hierarchies' roots (as a process in a container's own namespace sees them).
  const std::string own = ReadSmallFile("/proc/self/cgroup").value_or("0::/\n1:cpu:/\n");
  std::optional<int> limit = CgroupCpuLimit(own, ReadSmallFile);
  return limit ? std::min(cpus, *limit) : cpus;
}

}  // namespace rosetta::server
