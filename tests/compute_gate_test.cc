#include "server/compute_gate.h"

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rosetta::server {
namespace {

TEST(ComputeGate, OneLeaseAtATime) {
  ComputeGate gate;
  std::atomic<int> inside{0};
  std::atomic<int> most_inside{0};
  std::atomic<int> turns{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        ComputeGate::Lease lease = gate.Acquire();
        const int now = ++inside;
        int seen = most_inside.load();
        while (now > seen && !most_inside.compare_exchange_weak(seen, now)) {
        }
        ++turns;
        --inside;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(most_inside.load(), 1);
  EXPECT_EQ(turns.load(), 2000);
}

// Waiters get their turns in the order they asked, and the holder sees that others wait.
TEST(ComputeGate, TurnsAreFirstComeFirstServedAndContentionIsVisible) {
  ComputeGate gate;
  std::optional<ComputeGate::Lease> held(gate.Acquire());
  EXPECT_FALSE(held->Contended());
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  for (int w = 0; w < 3; ++w) {
    waiters.emplace_back([&, w] {
      ComputeGate::Lease lease = gate.Acquire();
      absl::MutexLock lock(&mu);
      order.push_back(w);
    });
    // The next waiter starts only once this one waits, so the order they asked in is known.
    while (gate.Waiting() < w + 1) absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_TRUE(held->Contended());
  held.reset();
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(gate.Waiting(), 0);
}

}  // namespace
}  // namespace rosetta::server
