#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite twice: an optimised build, then a
# build with AddressSanitizer and UndefinedBehaviorSanitizer; then the tests of what runs on
# several threads (thread pool, model worker, server, daemon, clients, certificate and key
# watchers) once more in a build with ThreadSanitizer. Prints how long each stage took.
#   scripts/test.sh              all three builds
#   ROSETTA_SKIP_SANITIZERS=1 scripts/test.sh   the optimised build only
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

stage_start=0
stage() { stage_start=$(date +%s); echo "=== $1"; }
stage_done() { echo "=== $1: $(( $(date +%s) - stage_start )) s"; }

stage "install dependencies"
scripts/install-deps.sh --test
stage_done "install dependencies"

stage "build (Release)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
stage_done "build (Release)"

stage "tests (Release)"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 1200
stage_done "tests (Release)"

if [[ "${ROSETTA_SKIP_SANITIZERS:-0}" != "1" ]]; then
  stage "build (ASan+UBSan)"
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DROSETTA_SANITIZE=ON \
    -DROSETTA_BUILD_BENCH=OFF
  cmake --build build-sanitize -j "$jobs"
  stage_done "build (ASan+UBSan)"

  stage "tests (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-sanitize --output-on-failure -j "$jobs" --timeout 2400 \
      -LE 'slow|docker|deploy|external'  # the image, the manifests, third-party clients: once, in the optimised build
  stage_done "tests (ASan+UBSan)"

  stage "build (TSan)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DROSETTA_TSAN=ON
  cmake --build build-tsan -j "$jobs"
  stage_done "build (TSan)"

  # The sanitizer's options and suppressions are compiled in (tests/tsan_support.cc): the first
  # report ends the process, which fails its test. Numerical tests are left to the builds above.
  stage "tests (TSan)"
  ctest --test-dir build-tsan --output-on-failure -j "$jobs" --timeout 2400 -LE 'slow|docker|deploy|external' \
    -R '^(thread_pool_test|compute_gate_test|decoding_test|model_worker_test|server_test|library_log_test|api_key_file_test|tls_test|client_test|daemon_test|daemon_security_test|metrics_test|loadgen_test|stress_test)$'
  stage_done "tests (TSan)"
fi
echo "=== all tests passed"
