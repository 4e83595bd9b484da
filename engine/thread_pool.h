// ThreadPool: runs the iterations of a parallel loop on a fixed set of threads, the caller
// included. Used for the engine's own kernels (packed GEMM, attention, softmax); OpenBLAS keeps
// its own threads for the large GEMMs.
//
// ParallelFor may be called from one thread at a time (the worker that owns the model's state);
// it returns when every iteration is done.
#ifndef ROSETTA_ENGINE_THREAD_POOL_H_
#define ROSETTA_ENGINE_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rosetta {

class ThreadPool {
 public:
  // `num_threads` counts the calling thread: 1 runs everything inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into num_threads() contiguous chunks and calls fn(begin, end) for each, in
  // parallel. Chunks are empty-free: with n < num_threads(), only n calls happen.
  void ParallelFor(int n, const std::function<void(int begin, int end)>& fn);

  // Sends the idle workers to sleep at once instead of spinning for the next ParallelFor: for a
  // pause in this pool's work during which other threads need the CPUs (another model's turn).
  // The next ParallelFor wakes them. May be called from any thread.
  void Rest();

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int, int)>* task_ = nullptr;
  int task_n_ = 0;
  uint64_t generation_ = 0;
  // Workers still running the current task. Decremented without the mutex; the caller spins on
  // it before sleeping on `done_`.
  std::atomic<int> pending_{0};
  bool stop_ = false;
  std::atomic<uint64_t> published_generation_{0};
  // Set by Rest, cleared by ParallelFor: idle workers stop spinning and sleep.
  std::atomic<bool> resting_{false};
};

}  // namespace rosetta

#endif  // ROSETTA_ENGINE_THREAD_POOL_H_
