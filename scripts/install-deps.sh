#!/usr/bin/env bash
# Installs the Debian 12 packages Rosetta needs that are not installed yet.
#   scripts/install-deps.sh          build and run dependencies
#   scripts/install-deps.sh --test   also what the tests use (PyTorch reference, SentencePiece tools,
#                                    Prometheus, podman, Node.js)
set -euo pipefail

packages=(build-essential cmake ninja-build pkg-config
          libopenblas-dev libabsl-dev nlohmann-json3-dev libsentencepiece-dev libutf8proc-dev libzip-dev
          libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc grpc-proto
          prometheus-cpp-dev libcurl4-openssl-dev libssl-dev)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(libgtest-dev libgmock-dev libbenchmark-dev sentencepiece
             python3-torch python3-numpy python3-sentencepiece
             python3-grpcio python3-grpc-tools prometheus
             openssl  # tests/make_test_certificates.sh
             podman runc debootstrap)  # tests/docker_test.sh (podman with runc, as TESTING-TOOLS.md)
  # tests/deploy_test.sh installs its npm packages itself; it needs node and npm (unless a Node.js
  # from elsewhere already provides them).
  command -v npm >/dev/null || packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} > 0 )); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
