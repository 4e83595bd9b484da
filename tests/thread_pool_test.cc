#include "engine/thread_pool.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include "gtest/gtest.h"

namespace rosetta {
namespace {

TEST(ThreadPool, EveryIterationRunsOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int n : {0, 1, 2, 5, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](int begin, int end) {
        EXPECT_LT(begin, end);
        for (int i = begin; i < end; ++i) hits[i]++;
      });
      for (int i = 0; i < n; ++i)
        ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n;
    }
  }
}

TEST(ThreadPool, UsesSeveralThreadsAndManyCallsInARow) {
  ThreadPool pool(2);
  std::mutex mutex;
  std::set<std::thread::id> ids;
  for (int call = 0; call < 2000; ++call) {
    std::atomic<int> sum{0};
    pool.ParallelFor(2, [&](int begin, int end) {
      for (int i = begin; i < end; ++i) sum += i + 1;
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
    });
    ASSERT_EQ(sum.load(), 3);
  }
  EXPECT_EQ(ids.size(), 2u);
}

// Rest (which sends idle workers to sleep at once instead of spinning) may come from any thread
// at any time, in the middle of loops too: every loop still runs each iteration once, and none
// waits forever for a worker that went to sleep.
TEST(ThreadPool, RestFromAnotherThreadNeverLosesAWakeUp) {
  ThreadPool pool(3);
  std::atomic<bool> stop{false};
  std::thread rester([&] {
    while (!stop.load()) {
      pool.Rest();
      std::this_thread::yield();
    }
  });
  for (int call = 0; call < 3000; ++call) {
    std::vector<std::atomic<int>> hits(7);
    pool.ParallelFor(7, [&](int begin, int end) {
      for (int i = begin; i < end; ++i) hits[i]++;
    });
    for (int i = 0; i < 7; ++i) ASSERT_EQ(hits[i].load(), 1) << "call " << call;
    if (call % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  stop = true;
  rester.join();
}

}  // namespace
}  // namespace rosetta
