// How many CPUs this process may use: its affinity mask, further limited by a cgroup CPU quota
// (containers: Docker --cpus, Kubernetes CPU limits).
#ifndef ROSETTA_SERVER_CPU_COUNT_H_
#define ROSETTA_SERVER_CPU_COUNT_H_

#include <optional>

#include "absl/strings/string_view.h"

namespace rosetta::server {

// CPUs allowed by a cgroup v2 `cpu.max` file ("max 100000" or "150000 100000"), rounded up;
// nullopt when unlimited or unreadable.
std::optional<int> CpusFromCgroupV2(absl::string_view cpu_max);
// The same for cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us.
std::optional<int> CpusFromCgroupV1(absl::string_view quota_us, absl::string_view period_us);

// The affinity mask's CPU count, limited by the cgroup quota under /sys/fs/cgroup; at least 1.
int AvailableCpus();

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_CPU_COUNT_H_
