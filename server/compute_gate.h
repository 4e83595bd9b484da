// ComputeGate: the models of one daemon take turns on the CPUs, one unit of engine work at a time.
//
// Each model's engine has as many threads as the process may use CPUs, so two models computing
// at once would put twice as many busy threads as cores on the machine: their parallel loops
// wait for each other's descheduled threads and spin through each other's time slices (two busy
// models measured 0.82x to 0.90x of the machine's throughput between them). With the gate, the
// model workers hold a lease for each unit of work (a decoding step with its admissions, an Encode
// batch) and take turns first come, first served. Thread-safe.
#ifndef ROSETTA_SERVER_COMPUTE_GATE_H_
#define ROSETTA_SERVER_COMPUTE_GATE_H_

#include <cstdint>
#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace rosetta::server {

class ComputeGate {
 public:
  // The right to compute until destroyed (or moved from).
  class Lease {
   public:
    Lease(Lease&& other) noexcept : gate_(other.gate_) { other.gate_ = nullptr; }
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease();

    // Whether another worker is waiting for its turn.
    // REQUIRES: not moved from.
    bool Contended() const;

   private:
    friend class ComputeGate;
    explicit Lease(ComputeGate* gate) : gate_(gate) {}
    ComputeGate* gate_;
  };

  ComputeGate() = default;
  ComputeGate(const ComputeGate&) = delete;
  ComputeGate& operator=(const ComputeGate&) = delete;

  // Blocks until every earlier caller has released its lease. `on_wait`, when set, runs (without
  // the gate's lock) before blocking, only when the caller has to wait.
  [[nodiscard]] Lease Acquire(const std::function<void()>& on_wait = nullptr);

  // Callers waiting for a lease (the holder not counted).
  int Waiting() const;

 private:
  void Release();

  mutable absl::Mutex mu_;
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t serving_ ABSL_GUARDED_BY(mu_) = 0;  // the ticket whose holder may compute
};

}  // namespace rosetta::server

#endif  // ROSETTA_SERVER_COMPUTE_GATE_H_
