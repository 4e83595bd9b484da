// rosettad: serves translation and embedding models over gRPC.
//
//   rosettad --model NAME=PATH [--model ...] [--listen 0.0.0.0:50051] [--threads N] [...]
//
// SIGTERM or SIGINT drains: health NOT_SERVING, new requests UNAVAILABLE, requests in flight
// finish within --drain_timeout, exit 0. See --help for every flag.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "engine/blas.h"
#include "hub/hub_model.h"
#include "server/cpu_count.h"
#include "server/daemon_options.h"
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
  // The engine splits GEMMs over its own threads.
  rosetta::SetBlasThreads(1);
  rosetta::server::Log("starting: ", options->threads, " engine threads per model, BLAS kernels ",
                       rosetta::BlasCoreName());

  rosetta::server::Server server(*options);
  if (absl::Status s = server.Start(); !s.ok()) {
    rosetta::server::Log("error: ", s.message());
    return 1;
  }
  if (absl::Status s = server.LoadModels(); !s.ok()) {
    rosetta::server::Log("error: ", s.message());
    server.Drain();
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  rosetta::server::Log("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  server.Drain();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  rosetta::SelectOpenBlasKernels(argv);
  return Run(argc, argv);
}
