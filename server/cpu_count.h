// How many CPUs this process may use: its affinity mask, further limited by a cgroup CPU quota
// (containers: Docker --cpus, Kubernetes CPU limits).
#ifndef ROSETTA_SERVER_CPU_COUNT_H_
#define ROSETTA_SERVER_CPU_COUNT_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace rosetta::server {

// CPUs allowed by a cgroup v2 `cpu.max` file ("max 100000" or "150000 100000"), rounded up;
// nullopt when unlimited or unreadable.
std::optional<int> CpusFromCgroupV2(absl::string_view cpu_max);
// The same for cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us.
std::optional<int> CpusFromCgroupV1(absl::string_view quota_us, absl::string_view period_us);

// Reads a whole small file; nullopt when it cannot be read.
using FileReader = std::function<std::optional<std::string>(const std::string& path)>;

// The tightest CPU quota over this process's cgroups and their parents, given the text of
// /proc/self/cgroup (cgroup v2's "0::/path" under /sys/fs/cgroup, v1's cpu controller under
// /sys/fs/cgroup/cpu); nullopt when none is set. A systemd CPUQuota= or a parent's limit counts
// too, not only the quota of a container's own namespace root.
std::optional<int> CgroupCpuLimit(absl::string_view proc_self_cgroup, const FileReader& read);

// The affinity mask's CPU count, limited by the cgroup quotas; at least 1.
int AvailableCpus();

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_CPU_COUNT_H_
