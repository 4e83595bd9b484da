#!/usr/bin/env bash
# rosettad through a gRPC client that no one here wrote and that has none of our proto files:
# `buf curl` (npm package @bufbuild/buf) learns the API from the server's reflection, lists the
# methods, calls Translate, TranslateStream, Encode, ListModels and the standard health service
# with JSON, and gets gRPC status codes back for bad requests (its exit code is 8 x the code).
#
#   grpc_clients_test.sh --rosettad BIN --shared DIR --work DIR
#
# @bufbuild/buf is installed into WORK/npm once (the npm registry is needed the first time only).
set -uo pipefail

rosettad="" shared="" work=""
while (( $# > 0 )); do
  case "$1" in
    --rosettad) rosettad=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "grpc_clients_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $rosettad && -n $shared && -n $work ]] ||
  { echo "usage: grpc_clients_test.sh --rosettad BIN --shared DIR --work DIR" >&2; exit 2; }
mkdir -p "$work" && work=$(cd "$work" && pwd)
readonly BUF_VERSION=1.75.0

source "$(dirname "${BASH_SOURCE[0]}")/check.sh"  # check STATUS WHAT [DETAILS]
daemon_pid=""
finish() {
  [[ -n $daemon_pid ]] && kill "$daemon_pid" 2>/dev/null
  echo "grpc_clients_test: $passed passed, $failed failed"
  exit $(( failed > 0 ))
}

for tool in node npm; do
  command -v "$tool" >/dev/null ||
    { check 1 "$tool is installed (scripts/install-deps.sh --test installs it)"; finish; }
done
model="$shared/models/ctranslate2/v2/aren-transliteration"
[[ -f $model/model.bin ]] || { check 1 "the shared model is at $model"; finish; }

# ---- buf, cached in WORK/npm ----
npm_dir="$work/npm"
buf="$npm_dir/node_modules/.bin/buf"
if [[ ! -x $buf ]] || [[ $("$buf" --version 2>/dev/null) != "$BUF_VERSION" ]]; then
  mkdir -p "$npm_dir"
  echo '{"name": "rosetta-grpc-clients-test", "private": true}' > "$npm_dir/package.json"
  if ! (cd "$npm_dir" && npm install --no-audit --no-fund --prefer-offline \
          "@bufbuild/buf@$BUF_VERSION" > npm-install.log 2>&1); then
    check 1 "npm install @bufbuild/buf@$BUF_VERSION" "$(tail -20 "$npm_dir/npm-install.log")"
    finish
  fi
fi
check "$([[ $("$buf" --version) == "$BUF_VERSION" ]]; echo $?)" "buf $BUF_VERSION runs"

# ---- the daemon ----
log="$work/rosettad.log"
"$rosettad" --listen 127.0.0.1:0 --metrics_listen none --model "aren=$model" --threads 2 \
  2> "$log" &
daemon_pid=$!
address=""
for _ in $(seq 600); do
  address=$(sed -n 's/.*rosettad: serving on \([^ ]*\).*/\1/p' "$log" | head -1)
  [[ -n $address ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n $address ]] || { check 1 "rosettad serves" "$(tail -20 "$log")"; finish; }
echo "rosettad serves on $address"

# call METHOD JSON: buf curl's output in $out, its exit status in $status
call() {
  out=$("$buf" curl --protocol grpc --http2-prior-knowledge --timeout 60s -d "$2" \
        "http://$address/$1" 2>&1)
  status=$?
}
# has ERE...: whether $out matches every pattern (Go's JSON output varies its spacing on purpose)
has() {
  local pattern
  for pattern in "$@"; do grep -Eq -- "$pattern" <<< "$out" || return 1; done
}

methods=$("$buf" curl --protocol grpc --http2-prior-knowledge --list-methods "http://$address" 2>&1)
missing=""
for method in rosetta.v1.Rosetta/Translate rosetta.v1.Rosetta/TranslateStream \
              rosetta.v1.Rosetta/Encode rosetta.v1.Rosetta/ListModels \
              rosetta.v1.Rosetta/GetModel grpc.health.v1.Health/Check; do
  grep -qx "$method" <<< "$methods" || missing+=" $method"
done
check "$([[ -z $missing ]]; echo $?)" "reflection lists every method (buf curl --list-methods)" \
  "missing:$missing; got: $methods"

call grpc.health.v1.Health/Check '{}'
check "$([[ $status == 0 ]] && has '"status": *"SERVING"'; echo $?)" "health Check is SERVING" "$out"

call rosetta.v1.Rosetta/Translate '{"texts": ["آ ت ز م و ن", "ب"], "options": {"returnScores": true}}'
check "$([[ $status == 0 ]] && has '"text": *"a t z m o n"' '"score":'; echo $?)" \
  "Translate by JSON, learnt through reflection: the published example" "$out"

call rosetta.v1.Rosetta/TranslateStream '{"texts": ["آ ت ز م و ن"], "options": {"beamSize": 1}}'
check "$([[ $status == 0 ]] && has '"partial":' '"text": *"a t z m o n"' '"usage":'; echo $?)" \
  "TranslateStream: partial tokens, the translation, then the usage" "$out"

call rosetta.v1.Rosetta/Encode '{"texts": ["آ ت ز"], "normalize": true}'
check "$([[ $status == 0 ]] && has '"dimension": *32'; echo $?)" \
  "Encode: a 32-dimensional embedding" "$out"

call rosetta.v1.Rosetta/ListModels '{}'
check "$([[ $status == 0 ]] && has '"name": *"aren"' 'MODEL_KIND_TRANSLATION'; echo $?)" \
  "ListModels names the model and its kind" "$out"

# Errors come back as gRPC status codes (buf curl exits with 8 x the code) with their message.
call rosetta.v1.Rosetta/Translate '{"texts": [""]}'
check "$([[ $status == 24 ]] && has 'texts\[0\] is empty'; echo $?)" \
  "an empty text: INVALID_ARGUMENT (3) naming the field" "exit $status: $out"
call rosetta.v1.Rosetta/Translate '{"model": "nope", "texts": ["ب"]}'
check "$([[ $status == 40 ]] && has 'nope.{0,2} is not loaded'; echo $?)" \
  "an unknown model: NOT_FOUND (5)" "exit $status: $out"
call rosetta.v1.Rosetta/Translate '{"texts": ["ب"], "options": {"beamSize": 17}}'
check "$([[ $status == 24 ]] && has 'options.beam_size is 17; the limit is 16'; echo $?)" \
  "beam 17: INVALID_ARGUMENT naming the option and its limit" "exit $status: $out"

kill -TERM "$daemon_pid"
wait "$daemon_pid"
exit_status=$?
daemon_pid=""
check "$exit_status" "rosettad exits 0 on SIGTERM" "$(tail -5 "$log")"
finish
