// ThreadSanitizer builds only (-DROSETTA_TSAN=ON, scripts/test.sh): linked into every target.
//
// 1. Abseil's Mutex made visible. Debian's Abseil is not built with ThreadSanitizer, so its Mutex,
//    whose lock word and futex live in the uninstrumented library, looks to the sanitizer like no
//    synchronisation at all: every field guarded by one would be reported as a race. This file
//    interposes the Mutex and CondVar entry points (the executable's definitions take precedence
//    over the shared library's, for gRPC's calls too): each calls the library's own function,
//    found with dlsym(RTLD_NEXT), and marks a release on the mutex's address before giving it up
//    and an acquire after taking it. Conditions are wrapped so that their evaluation, which the
//    library runs with the mutex held in the waiter or in the thread unlocking, is ordered too.
// 2. Suppressions and options compiled in, so that every process started by a test (the daemon,
//    the clients, whatever environment the test gives them) gets them.
#if defined(__SANITIZE_THREAD__)

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* symbol = dlsym(RTLD_NEXT, mangled);
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in the Abseil library\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

void Acquire(const absl::Mutex* mu) { __tsan_acquire(const_cast<absl::Mutex*>(mu)); }
void Release(const absl::Mutex* mu) { __tsan_release(const_cast<absl::Mutex*>(mu)); }

// A condition that marks an acquire before the caller's condition is evaluated and a release
// after: the library evaluates it with the mutex held, in the waiter or in the thread unlocking,
// at points the annotations outside cannot reach.
struct Annotated {
  const absl::Condition* condition;
  const absl::Mutex* mu;
  static bool Eval(Annotated* self) {
    Acquire(self->mu);
    const bool result = self->condition->Eval();
    Release(self->mu);
    return result;
  }
};

}  // namespace

// Gone on the first report: a test then fails on it. TSAN_OPTIONS still overrides.
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1:second_deadlock_stack=1";
}

// Libraries that come uninstrumented from Debian hand memory between their threads through
// atomics and futexes the sanitizer cannot see (gRPC's completion queues and slice buffers,
// OpenBLAS's worker threads, Abseil's reference-counted Status, time zones), so it reports each
// hand-over as a race. A report with one of them in either stack is not about this project's
// synchronisation. (Abseil's Mutex is made visible instead, above.)
extern "C" const char* __tsan_default_suppressions() {
  return "race:libgrpc.so\n"
         "race:libgrpc++.so\n"
         "race:libgpr.so\n"
         "race:libopenblas.so\n"
         "race:libabsl_\n"
         "race:libprotobuf.so\n"
         "race:libssl.so\n"
         "race:libcrypto.so\n";
}

// The mangled names carry Abseil's inline namespace, which Debian's build names "debian3".
#define ROSETTA_REAL(type, name) static const auto real = Real<type>(name)

namespace absl {

void Mutex::Lock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  Acquire(this);
}

void Mutex::ReaderLock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  ROSETTA_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  ROSETTA_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

void Mutex::Unlock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  Release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  ROSETTA_REAL(void (*)(Mutex*, const Condition&),
               "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  // Publishes `annotated_cond`, which the library reads in the thread unlocking before it calls
  // Eval. (Also orders this thread's earlier accesses before later holders of the mutex, which
  // could hide a race of those; Rosetta itself never calls LockWhen.)
  Release(this);
  real(this, annotated_cond);
  Acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  ROSETTA_REAL(void (*)(Mutex*, const Condition&),
               "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  // Publishes `annotated_cond`, which the library reads in the thread unlocking before it calls
  // Eval. (Also orders this thread's earlier accesses before later holders of the mutex, which
  // could hide a race of those; Rosetta itself never calls LockWhen.)
  Release(this);
  real(this, annotated_cond);
  Acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  Release(this);  // as in LockWhen
  const bool result = real(this, annotated_cond, timeout);
  Acquire(this);
  return result;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Time),
               "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  Release(this);  // as in LockWhen
  const bool result = real(this, annotated_cond, deadline);
  Acquire(this);
  return result;
}

void Mutex::Await(const Condition& cond) {
  ROSETTA_REAL(void (*)(Mutex*, const Condition&),
               "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  Release(this);
  real(this, annotated_cond);
  Acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  Release(this);
  const bool result = real(this, annotated_cond, timeout);
  Acquire(this);
  return result;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Time),
               "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Annotated annotated{&cond, this};
  const Condition annotated_cond(&Annotated::Eval, &annotated);
  Release(this);
  const bool result = real(this, annotated_cond, deadline);
  Acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  ROSETTA_REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  ROSETTA_REAL(bool (*)(CondVar*, Mutex*, Duration),
               "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool result = real(this, mu, timeout);
  Acquire(mu);
  return result;
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  ROSETTA_REAL(bool (*)(CondVar*, Mutex*, Time),
               "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool result = real(this, mu, deadline);
  Acquire(mu);
  return result;
}

}  // namespace absl

#endif  // __SANITIZE_THREAD__
