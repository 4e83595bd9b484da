// rosettad: serves translation and embedding models over gRPC.
//
//   rosettad --model NAME=PATH [--model ...] [--listen 0.0.0.0:50051] [--threads N] [...]
//
// SIGTERM or SIGINT drains: health NOT_SERVING, new requests UNAVAILABLE, requests in flight
// finish within --drain_timeout, exit 0. See --help for every flag.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "engine/blas.h"
#include "hub/hub_model.h"
#include "server/cpu_count.h"
#include "server/daemon_options.h"
#include "server/library_log.h"
#include "server/log.h"
#include "server/server.h"

namespace {

int Run(int argc, char** argv) {
  absl::StatusOr<rosetta::server::DaemonOptions> options =
      rosetta::server::ParseDaemonOptions(argc, argv);
  if (!options.ok()) {
    if (absl::IsNotFound(options.status()) &&
        options.status().message() == rosetta::server::DaemonUsage()) {
      std::cout << options.status().message();
      return 0;
    }
    std::cerr << "rosettad: " << options.status().message() << "\n"
              << "Run rosettad --help for the flags.\n";
    return 2;
  }
  // Every thread started from here on inherits the blocked signals; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (options->threads == 0) options->threads = rosetta::server::AvailableCpus();
  options->hub = rosetta::hub::HubOptionsFromEnvironment();
  options->hub.log = [](const std::string& line) { rosetta::server::Log(line); };
  rosetta::server::RouteProtobufLogs();
  rosetta::server::RouteGrpcLogs();
  // The engine splits GEMMs over its own threads.
  rosetta::SetBlasThreads(1);
  rosetta::server::Log("starting: ", options->threads, " engine threads per model, BLAS kernels ",
                       rosetta::BlasCoreName());

  // The main thread waits for the signals: the kernel offers a process-wide signal to the main
  // thread first, and a thread that merely has it unblocked (OpenBLAS starts its threads before
  // main()) would otherwise take it and die. A loader thread starts the server and loads models. A
  // signal while models load (a Hub download can take minutes) ends the process at once, since
  // nothing has been accepted yet; once serving, it starts the drain. SIGUSR1 tells that loading
  // failed.
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Whether the models serve, or the process exits on a signal instead: decided once, under the
  // lock, so that no call is accepted by a process that then exits without draining.
  std::mutex state_mu;
  bool serving = false;
  bool exiting = false;
  std::atomic<bool> load_failed{false};
  // SIGUSR1 goes to this thread alone: sent to the process, it could reach a thread that has it
  // unblocked (OpenBLAS's) before this one waits for it, and its default action ends the process.
  const pthread_t main_thread = pthread_self();
  rosetta::server::Server server(*options);
  std::thread loader([&] {
    absl::Status status = server.Start();
    if (status.ok()) {
      status = server.LoadModels([&] {
        std::lock_guard<std::mutex> lock(state_mu);
        serving = !exiting;
        return serving;
      });
    }
    {
      std::lock_guard<std::mutex> lock(state_mu);
      if (exiting) return;  // the main thread ends the process on a signal
    }
    if (!status.ok()) {
      rosetta::server::Log("error: ", status.message());
      load_failed.store(true);
      pthread_kill(main_thread, SIGUSR1);
      return;
    }
  });
  for (;;) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGUSR1) {
      if (!load_failed.load()) continue;
      loader.join();
      server.Drain();
      return 1;
    }
    const char* name = signal_number == SIGTERM ? "SIGTERM" : "SIGINT";
    bool exit_now;
    {
      std::lock_guard<std::mutex> lock(state_mu);
      exiting = !serving;
      exit_now = exiting;
    }
    if (exit_now) {
      rosetta::server::Log("received ", name, " while loading models: exiting");
      std::_Exit(0);  // downloads in progress resume at the next start
    }
    rosetta::server::Log("received ", name);
    break;
  }
  loader.join();
  server.Drain();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  return Run(argc, argv);
}
