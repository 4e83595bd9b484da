#!/usr/bin/env bash
# Writes throwaway TLS certificates for the tests, as PEM files in DIR (created if missing):
#   make_test_certificates.sh DIR [PREFIX]
#   PREFIXca.crt, PREFIXca.key          a CA ("Rosetta test CA" and the prefix)
#   PREFIXserver.crt, PREFIXserver.key  signed by it, for localhost and 127.0.0.1 (server use)
#   PREFIXclient.crt, PREFIXclient.key  signed by it, CN rosetta-test-client (client use)
# Two calls with different prefixes give two unrelated CAs. P-256 keys, valid for 30 days.
set -euo pipefail
dir=$1
p=${2:-}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key "${p}ca.key"
openssl req -x509 -new -key "${p}ca.key" -out "${p}ca.crt" -days 30 \
  -subj "/CN=Rosetta test CA${p:+ $p}" 2>/dev/null
sign() {  # sign NAME SUBJECT EXTENSIONS
  key "${p}$1.key"
  openssl req -new -key "${p}$1.key" -out "${p}$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "$3" > "${p}$1.ext"
  openssl x509 -req -in "${p}$1.csr" -CA "${p}ca.crt" -CAkey "${p}ca.key" -CAcreateserial \
    -days 30 -out "${p}$1.crt" -extfile "${p}$1.ext" 2>/dev/null
  rm -f "${p}$1.csr" "${p}$1.ext"
}
sign server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
sign client "/CN=rosetta-test-client" "extendedKeyUsage=clientAuth\n"
rm -f "${p}ca.srl"
