#include "server/compute_gate.h"

namespace rosetta::server {

ComputeGate::Lease::~Lease() {
  if (gate_ != nullptr) gate_->Release();
}

bool ComputeGate::Lease::Contended() const { return gate_->Waiting() > 0; }

int ComputeGate::Waiting() const {
  absl::MutexLock lock(&mu_);
  // Tickets [serving_, next_ticket_) are the holder's and the waiters'; none when idle.
  const uint64_t outstanding = next_ticket_ - serving_;
  return outstanding > 1 ? static_cast<int>(outstanding - 1) : 0;
}

ComputeGate::Lease ComputeGate::Acquire(const std::function<void()>& on_wait) {
  uint64_t ticket;
  {
    absl::MutexLock lock(&mu_);
    ticket = next_ticket_++;
    if (serving_ == ticket) return Lease(this);
  }
  if (on_wait) on_wait();
  absl::MutexLock lock(&mu_);
  auto my_turn = [this, ticket]() { return serving_ == ticket; };
  mu_.Await(absl::Condition(&my_turn));
  return Lease(this);
}

void ComputeGate::Release() {
  absl::MutexLock lock(&mu_);
  ++serving_;
}

}  // namespace rosetta::server
