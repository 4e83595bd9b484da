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
//    Reader locks are left alone (neither this project nor gRPC takes one): were one used, what it
//    guards would be reported as races, never hidden.
// 2. Options and suppressions compiled in, so that every process started by a test (the daemon,
//    the clients, whatever environment the test gives them) gets them.
#if defined(__SANITIZE_THREAD__)

#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace {

template <typename Fn>
Fn Real(const char* mangled) {
  void* symbol = dlsym(RTLD_NEXT, mangled);
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan_support: %s not found in the Abseil library\n", mangled);
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

void Acquire(const absl::Mutex* mu) { __tsan_acquire(const_cast<absl::Mutex*>(mu)); }
void Release(const absl::Mutex* mu) { __tsan_release(const_cast<absl::Mutex*>(mu)); }

// A condition around the caller's: the library evaluates conditions with the mutex held, in the
// waiter or in the thread unlocking, at points the annotations outside cannot reach, so Eval
// marks an acquire of the mutex before the caller's condition and a release after. It is built
// with the library's non-template constructor, so only Eval, not the library's code reading the
// Condition, is instrumented; the waiter publishes `Annotated` on its own address (Publish), which
// adds no edge on the mutex.
struct Annotated {
  const absl::Condition* condition;
  const absl::Mutex* mu;

  absl::Condition Publish() {
    __tsan_release(this);
    return absl::Condition(&Annotated::Eval, static_cast<void*>(this));
  }
  static bool Eval(void* arg) {
    auto* self = static_cast<Annotated*>(arg);
    __tsan_acquire(self);
    Acquire(self->mu);
    const bool result = self->condition->Eval();
    Release(self->mu);
    return result;
  }
};

// The library's `real` LockWhen or Await (they differ only in whether the caller holds the mutex,
// which Await releases first) with the annotated condition; `extra` is a timeout or deadline.
template <typename Fn, typename... Extra>
auto WhenCondition(Fn real, absl::Mutex* mu, const absl::Condition& cond, Extra... extra) {
  Annotated annotated{&cond, mu};
  const absl::Condition published = annotated.Publish();
  if constexpr (std::is_void_v<decltype(real(mu, published, extra...))>) {
    real(mu, published, extra...);
    Acquire(mu);
  } else {
    const auto result = real(mu, published, extra...);
    Acquire(mu);
    return result;
  }
}

// The library's `real` CondVar wait, which releases `mu` and takes it again.
template <typename Fn, typename... Extra>
auto CondVarWait(Fn real, absl::CondVar* cv, absl::Mutex* mu, Extra... extra) {
  Release(mu);
  if constexpr (std::is_void_v<decltype(real(cv, mu, extra...))>) {
    real(cv, mu, extra...);
    Acquire(mu);
  } else {
    const auto result = real(cv, mu, extra...);
    Acquire(mu);
    return result;
  }
}

}  // namespace

// Gone on the first report: a test then fails on it. The libraries that come uninstrumented from
// Debian (gRPC, OpenBLAS, the rest of Abseil, protobuf, OpenSSL) hand memory between their threads
// through atomics and futexes the sanitizer cannot see, so what its interceptors (memcpy, memset,
// free) see them do would be reported as races with each other: ignore_noninstrumented_modules
// keeps interceptors to calls from instrumented code (for gRPC, see the suppressions below).
// TSAN_OPTIONS overrides.
extern "C" const char* __tsan_default_options() {
  return "halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1";
}

// gRPC orders its threads' work in its uninstrumented core, so the sanitizer cannot tell that a
// handler or a reactor callback on one of gRPC's threads comes after what another did (gRPC's own
// inline code, compiled into this project's binaries, reports races with itself there). A report
// with gRPC's libraries in either stack is therefore suppressed: what runs on gRPC's threads is
// not checked against other threads. (race_top, the top frame only, was tried: gRPC's inline
// std::function and std::atomic members still showed up.) What is checked: the model workers,
// the engine and its thread pool, the compute gate, the certificate and key watchers, logging,
// the daemon's signal handling, and everything between them under their Abseil mutexes.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libgrpc.so\n"
         "race:libgrpc++.so\n"
         "race:libgpr.so\n";
}

// The mangled names carry Abseil's inline namespace, which Debian's build names "debian3".
#define ROSETTA_REAL(type, name) static const auto real = Real<type>(name)

namespace absl {

void Mutex::Lock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  ROSETTA_REAL(bool (*)(Mutex*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

void Mutex::Unlock() {
  ROSETTA_REAL(void (*)(Mutex*), "_ZN4absl7debian35Mutex6UnlockEv");
  Release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  ROSETTA_REAL(void (*)(Mutex*, const Condition&),
               "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  WhenCondition(real, this, cond);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return WhenCondition(real, this, cond, timeout);
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Time),
               "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return WhenCondition(real, this, cond, deadline);
}

void Mutex::Await(const Condition& cond) {
  ROSETTA_REAL(void (*)(Mutex*, const Condition&),
               "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Release(this);
  WhenCondition(real, this, cond);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Duration),
               "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Release(this);
  return WhenCondition(real, this, cond, timeout);
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  ROSETTA_REAL(bool (*)(Mutex*, const Condition&, Time),
               "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Release(this);
  return WhenCondition(real, this, cond, deadline);
}

void CondVar::Wait(Mutex* mu) {
  ROSETTA_REAL(void (*)(CondVar*, Mutex*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  CondVarWait(real, this, mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  ROSETTA_REAL(bool (*)(CondVar*, Mutex*, Duration),
               "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return CondVarWait(real, this, mu, timeout);
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  ROSETTA_REAL(bool (*)(CondVar*, Mutex*, Time),
               "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return CondVarWait(real, this, mu, deadline);
}

}  // namespace absl

#endif  // __SANITIZE_THREAD__
