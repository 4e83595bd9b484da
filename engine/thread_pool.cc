#include "engine/thread_pool.h"

#include <immintrin.h>

namespace rosetta {

namespace {

// Workers spin this many pause iterations before sleeping: a decoder step issues dozens of short
// parallel loops back to back, and a condition-variable wake-up costs more than the spin.
constexpr int kSpinIterations = 20000;
// The caller of ParallelFor spins this many before sleeping until the other chunks are done.
constexpr int kCallerSpinIterations = 2000;

void ChunkBounds(int n, int chunks, int index, int* begin, int* end) {
  const int base = n / chunks;
  const int extra = n % chunks;
  *begin = index * base + std::min(index, extra);
  *end = *begin + base + (index < extra ? 1 : 0);
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    ++generation_;
    published_generation_.store(generation_, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int n, const std::function<void(int, int)>& fn) {
  const int chunks = num_threads();
  if (n <= 0) return;
  if (chunks == 1 || n == 1) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    task_ = &fn;
    task_n_ = n;
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    resting_.store(false, std::memory_order_relaxed);
    ++generation_;
    published_generation_.store(generation_, std::memory_order_release);
  }
  wake_.notify_all();
  int begin, end;
  ChunkBounds(n, chunks, 0, &begin, &end);
  if (begin < end) fn(begin, end);
  // The other chunks usually end within microseconds of this one: spin briefly before sleeping,
  // since a wake-up through the kernel costs more than that. Briefly: when the machine has more
  // busy threads than cores, a long spin burns the time slice the other chunk needs.
  for (int spin = 0; spin < kCallerSpinIterations; ++spin) {
    if (pending_.load(std::memory_order_acquire) == 0) break;
    _mm_pause();
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_.load(std::memory_order_acquire) == 0; });
  task_ = nullptr;
}

void ThreadPool::Rest() { resting_.store(true, std::memory_order_relaxed); }

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < kSpinIterations; ++spin) {
      if (published_generation_.load(std::memory_order_acquire) != seen ||
          resting_.load(std::memory_order_relaxed)) {
        break;
      }
      _mm_pause();
    }
    const std::function<void(int, int)>* task;
    int n;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stop_) return;
      task = task_;
      n = task_n_;
    }
    int begin, end;
    ChunkBounds(n, num_threads(), index, &begin, &end);
    if (begin < end) (*task)(begin, end);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // Under the mutex, so that a caller between its check of pending_ and its wait cannot miss
      // the notification.
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

}  // namespace rosetta
