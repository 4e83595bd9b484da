#!/usr/bin/env bash
# The Docker image for real, with podman (no Docker engine here): builds the Dockerfile on a
# debian:bookworm base made by debootstrap from Debian's mirror, checks the image (non-root user,
# ports, health check, runtime libraries), runs it with the transliteration model mounted
# read-only, calls it from outside with the `rosetta` client, runs its HEALTHCHECK, then stops it
# with `podman stop -t GRACE` while a long request is in flight: the request must finish, the health
# check must turn unhealthy, new requests must get UNAVAILABLE, and the container must exit 0 before
# the grace period ends.
#
#   docker_test.sh --source DIR --work DIR --client BIN --shared DIR
#
# --work keeps podman's storage and the debootstrap base between runs (a rerun with unchanged
# sources reuses the image's layers). Exit status 77 (skipped) only when podman cannot run a
# container at all; any other problem fails.
set -uo pipefail

source_dir="" work="" client="" shared=""
while (( $# > 0 )); do
  case "$1" in
    --source) source_dir=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --client) client=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    *) echo "docker_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $source_dir && -n $work && -n $client && -n $shared ]] || {
  echo "usage: docker_test.sh --source DIR --work DIR --client BIN --shared DIR" >&2; exit 2; }

readonly IMAGE=localhost/rosetta:test
readonly MODEL_DIR="$shared/models/ctranslate2/v2/aren-transliteration"
readonly KNOWN_INPUT="آ ت ز م و ن" KNOWN_OUTPUT="a t z m o n"
readonly DRAIN_TIMEOUT=60  # rosettad --drain_timeout in the container (ample: a slow machine too)
readonly GRACE=75          # podman stop -t: SIGKILL after this many seconds
readonly LONG_TEXTS=400    # the request in flight during the stop: 400 texts x 256 tokens, 2 at a time
                           # (5-20 s here: it must outlast the checks made while draining)

test_start=$(date +%s)
failures=0
check() {  # check CONDITION_STATUS WHAT [DETAILS]
  if [[ $1 == 0 ]]; then
    echo "PASS: $2"
  else
    echo "FAIL: $2"
    [[ -n ${3:-} ]] && printf '%s\n' "$3" | sed 's/^/  /'
    failures=$((failures + 1))
  fi
}
skip() { echo "SKIP: $*"; exit 77; }
elapsed() { echo $(( $(date +%s) - $1 )); }

mkdir -p "$work"
work=$(cd "$work" && pwd)
source_dir=$(cd "$source_dir" && pwd)

# ---- podman, as TESTING-TOOLS.md says: runc, ulimits no higher than the host's, own storage ----
command -v podman >/dev/null || skip "podman is not installed (scripts/install-deps.sh --test installs it)"
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$work/containers.conf"
# Storage in WORK; the run root (state of running containers) must be a short path (podman
# refuses more than 50 characters) and the same on every run with this storage.
runroot=/tmp/rosetta-podman-$(printf '%s' "$work" | md5sum | cut -c1-12)
pm() { podman --root "$work/storage" --runroot "$runroot" --storage-driver overlay "$@"; }
# podman bind-mounts its overlay folder onto itself and leaves it mounted: unmount it at the end,
# or the build directory cannot be deleted (podman mounts it again when it needs it).
unmount_storage() {
  while mountpoint -q "$work/storage/overlay" 2>/dev/null; do
    umount "$work/storage/overlay" 2>/dev/null || break
  done
}
trap unmount_storage EXIT
if ! pm info >/dev/null 2>"$work/podman-info.err" && grep -q "configuration mismatch" "$work/podman-info.err"; then
  echo "podman storage in $work/storage made with other settings: starting it anew"
  unmount_storage
  rm -rf "$work/storage"
fi
pm info >/dev/null 2>"$work/podman-info.err" ||
  skip "podman cannot run here: $(tail -3 "$work/podman-info.err")"

[[ -f $MODEL_DIR/model.bin ]] || { echo "FAIL: the shared model is missing: $MODEL_DIR"; exit 1; }
[[ -x $client ]] || { echo "FAIL: the client is missing: $client"; exit 1; }

# ---- the debian:bookworm(-slim) base, made once by debootstrap from the host's apt mirror ----
if ! pm image exists docker.io/library/debian:bookworm-slim; then
  command -v debootstrap >/dev/null || skip "debootstrap is not installed (scripts/install-deps.sh --test)"
  rootfs_tar="$work/bookworm-rootfs.tar"
  if [[ ! -s $rootfs_tar ]]; then
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [[ -n $mirror ]] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [[ -n $mirror ]] || { echo "FAIL: no Debian mirror in apt's configuration"; exit 1; }
    step=$(date +%s)
    rm -rf "$work/rootfs"
    if ! debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1; then
      echo "FAIL: debootstrap (log: $work/debootstrap.log)"; tail -20 "$work/debootstrap.log"; exit 1
    fi
    rm -f "$work/rootfs/etc/apt/sources.list"
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      cp /etc/apt/sources.list.d/debian.sources "$work/rootfs/etc/apt/sources.list.d/"
    else
      cp /etc/apt/sources.list "$work/rootfs/etc/apt/sources.list"
    fi
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar -C "$work/rootfs" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$work/rootfs"
    echo "debootstrap bookworm: $(elapsed "$step") s"
  fi
  pm import --change 'CMD ["bash"]' "$rootfs_tar" docker.io/library/debian:bookworm-slim >/dev/null &&
    pm tag docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm ||
    { echo "FAIL: podman import of the debootstrap base"; exit 1; }
fi

# Can podman run a container at all? (If not, this machine cannot test images: skip.)
if ! out=$(pm run --rm --network=host docker.io/library/debian:bookworm-slim true 2>&1); then
  skip "podman cannot run a container here: $out"
fi

# ---- build ----
step=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI image format has no health check).
if ! pm build --pull=never --network=host --format docker --build-arg BUILD_JOBS=2 \
       -t "$IMAGE" -f "$source_dir/Dockerfile" "$source_dir" > "$work/build.log" 2>&1; then
  echo "FAIL: podman build (log: $work/build.log)"; tail -40 "$work/build.log"; exit 1
fi
build_seconds=$(elapsed "$step")
size=$(pm image inspect --format '{{.Size}}' "$IMAGE")
packages=$(grep '^runtime packages: ' "$work/build.log" | tail -1)
echo "image built in ${build_seconds} s, $(( size / 1000000 )) MB (${packages:-layers cached})"

# ---- the image's configuration ----
inspect() { pm image inspect --format "$1" "$IMAGE"; }
user=$(inspect '{{.Config.User}}')
check $([[ $user == 10001:10001 ]]; echo $?) "the image runs as the non-root user 10001:10001" "User: '$user'"
ports=$(inspect '{{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}')
check $([[ $ports == *50051/tcp* && $ports == *9400/tcp* ]]; echo $?) \
  "EXPOSE 50051 (gRPC) and 9400 (metrics)" "ExposedPorts: $ports"
health_test=$(inspect '{{if .Config.Healthcheck}}{{json .Config.Healthcheck.Test}}{{end}}')
check $([[ $health_test == *'"rosetta","health"'* || $health_test == *'/rosetta","health"'* ]]; echo $?) \
  "HEALTHCHECK runs 'rosetta health'" "Healthcheck: $health_test"
check $([[ $(inspect '{{.Config.StopSignal}}') == SIGTERM ]]; echo $?) "STOPSIGNAL SIGTERM"
entrypoint=$(inspect '{{json .Config.Entrypoint}}')
check $([[ $entrypoint == *rosettad* ]]; echo $?) "the entrypoint is rosettad (PID 1)" "$entrypoint"

# Every shared library of every binary resolves in the runtime image, and nothing else ran apt.
# (--health-interval disable: podman would ask systemd, absent here, for a health check timer.)
ldd_out=$(pm run --rm --network=host --health-interval disable --entrypoint /bin/sh "$IMAGE" -c \
  'for f in /opt/rosetta/bin/* /opt/rosetta/lib/rosetta/*.so; do echo "== $f"; ldd "$f"; done; id -u' 2>&1)
check $([[ $ldd_out == *"== /opt/rosetta/lib/rosetta/librosetta_spm_shim.so"* &&
           $ldd_out == *"== /opt/rosetta/bin/rosettad"* && $ldd_out != *"not found"* &&
           $(tail -1 <<< "$ldd_out") == 10001 ]]; echo $?) \
  "rosettad, rosetta, rosetta-translate and the SentencePiece shim find all their libraries" \
  "$(grep -E '^==|not found' <<< "$ldd_out" | head -40)"
compilers=$(pm run --rm --network=host --health-interval disable --entrypoint /bin/sh "$IMAGE" -c \
  'ls -d /usr/bin/g++* /usr/bin/cmake /usr/include/grpcpp 2>/dev/null' 2>> "$work/podman.err")
check $([[ -z $compilers ]]; echo $?) "the runtime image has no compiler, CMake or headers" "$compilers"

# ---- run it ----
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
address="127.0.0.1:$port"
# Metrics on a free port too (their default, 9400, may be taken on this host).
metrics_port=$(free_port)
# The arguments of the Kubernetes Deployment come first (the CPU limit: 1), so that the image's
# rosettad accepts them; the test's own flags, later, override them.
deployment_args=($(awk '/^ *args:/ {inside = 1; next}
                        inside && /^ *- --/ {print $2; next}
                        inside {exit}' "$source_dir/deploy/kubernetes/deployment.yaml" |
                   sed 's/\$(ROSETTA_CPU_LIMIT)/1/'))
check $([[ " ${deployment_args[*]} " == *" --models_dir=/models "* ]]; echo $?) \
  "deploy/kubernetes/deployment.yaml's rosettad arguments read: ${deployment_args[*]}"
container=rosetta-docker-test-$$
cleanup() { pm rm -f -t 0 "$container" >/dev/null 2>&1; unmount_storage; }
trap cleanup EXIT
# Only the flags the test needs: the default command serves /models (--models_dir /models).
# Two beams decoded at a time (--max_running_sequences 2: beam 2 for the known example) make the
# request of the drain test long; --health-interval disable: no systemd timers here, the test runs the health check itself.
step=$(date +%s)
if ! pm run -d --name "$container" --network=host --health-interval disable \
       -e ROSETTA_ADDRESS="$address" -v "$MODEL_DIR:/models/aren:ro" "$IMAGE" "${deployment_args[@]}" \
       --models_dir /models --listen "$address" --threads 1 --max_running_sequences 2 \
       --max_texts_per_request "$LONG_TEXTS" --drain_timeout "$DRAIN_TIMEOUT" --metrics_listen "127.0.0.1:$metrics_port" \
       > "$work/run.out" 2>&1; then
  echo "FAIL: podman run"; cat "$work/run.out"; exit 1
fi
serving=1
for _ in $(seq 1200); do
  if "$client" health --address "$address" --service rosetta.v1.Rosetta --deadline 1 >/dev/null 2>&1; then
    serving=0; break
  fi
  [[ $(pm inspect --format '{{.State.Running}}' "$container") == true ]] || break
  sleep 0.1
done
check $serving "the container serves with the Deployment's arguments (health SERVING from the host) $(elapsed "$step") s after podman run" \
  "$(pm logs "$container" 2>&1 | tail -20)"
if [[ $serving != 0 ]]; then echo "$failures check(s) failed"; exit 1; fi

out=$("$client" translate --address "$address" "$KNOWN_INPUT" 2>&1)
check $([[ $out == "$KNOWN_OUTPUT" ]]; echo $?) "rosetta translate '$KNOWN_INPUT' from the host: '$KNOWN_OUTPUT'" "$out"
metrics=$(/usr/bin/python3 -c "import urllib.request; print(urllib.request.urlopen(
  'http://127.0.0.1:$metrics_port/metrics', timeout=10).read().decode())" 2>&1)
check $([[ $metrics == *'rosetta_requests_total{'*'code="OK"'* ]]; echo $?) \
  "Prometheus metrics from the container: rosetta_requests_total counted the call" "$(head -5 <<< "$metrics")"
out=$(pm exec "$container" rosetta models 2>&1)
check $([[ $out == *aren*translation* ]]; echo $?) "rosetta models inside the container lists aren (/models/aren)" "$out"
out=$(pm healthcheck run "$container" 2>&1); status=$?
check $([[ $status == 0 ]]; echo $?) "podman healthcheck run: healthy while serving" "status $status: $out"

# ---- stop while a long request is in flight ----
/usr/bin/python3 -c "
import random
letters = 'ا ب ت ث ج ح خ د ذ ر ز س ش ص ض ط ظ ع غ ف ق ك ل م ن ه و ي'.split()
r = random.Random(1)
for _ in range($LONG_TEXTS):
    print(' '.join(r.choice(letters) for _ in range(20)))" > "$work/long.txt"
long_start=$(date +%s.%N)
"$client" translate --address "$address" --batch_size "$LONG_TEXTS" --beam_size 1 \
  --min_length 256 --max_length 256 --deadline 120 < "$work/long.txt" > "$work/long.out" 2> "$work/long.err" &
long_pid=$!
sleep 2  # the request reaches the engine
stop_start=$(date +%s.%N)
pm stop -t "$GRACE" "$container" > "$work/stop.out" 2>&1 &
stop_pid=$!
sleep 1.5  # SIGTERM is delivered: draining
out=$(pm healthcheck run "$container" 2>&1); status=$?
check $([[ $status != 0 ]]; echo $?) "podman healthcheck run: unhealthy while draining" "status $status: $out"
out=$("$client" translate --address "$address" --deadline 5 "$KNOWN_INPUT" 2>&1); status=$?
check $([[ $status == 1 && $out == *UNAVAILABLE* ]]; echo $?) "a new request while draining gets UNAVAILABLE" \
  "status $status: $out"
kill -0 "$long_pid" 2>/dev/null
check $? "the long request was still in flight during these two checks (else they prove nothing)"
wait "$long_pid"; long_status=$?
long_seconds=$(/usr/bin/python3 -c "import time; print(f'{time.time() - $long_start:.1f}')")
wait "$stop_pid"; stop_status=$?
stop_seconds=$(/usr/bin/python3 -c "import time; print(f'{time.time() - $stop_start:.1f}')")
lines=$(wc -l < "$work/long.out")
check $([[ $long_status == 0 && $lines == "$LONG_TEXTS" ]]; echo $?) \
  "the request in flight at SIGTERM finished: $lines translations in ${long_seconds} s" \
  "status $long_status: $(cat "$work/long.err")"
exit_code=$(pm inspect --format '{{.State.ExitCode}}' "$container")
check $([[ $stop_status == 0 && $exit_code == 0 ]]; echo $?) \
  "the container exited with status 0 (not killed)" "podman stop status $stop_status, exit code $exit_code"
check $(/usr/bin/python3 -c "import sys; sys.exit(0 if $stop_seconds < $GRACE else 1)"; echo $?) \
  "podman stop -t $GRACE returned after ${stop_seconds} s, within the grace period"
log=$(pm logs "$container" 2>&1)
check $([[ $log == *"received SIGTERM"* && $log =~ draining.*\ 1\ requests\ in\ flight && $log == *stopped* &&
           $log != *"drain timeout"* ]]; echo $?) \
  "the log shows SIGTERM, a drain with 1 request in flight, and the stop" "$(tail -8 <<< "$log")"

# ---- a model by Hub id, downloaded into a cache volume, then served from it offline ----
# tests/reference/fake_hub.py serves the transliteration model as the Hub repository test/aren.
hub_root="$work/hub"
rm -rf "$hub_root" && mkdir -p "$hub_root/test/aren" && cp "$MODEL_DIR"/* "$hub_root/test/aren/"
/usr/bin/python3 "$source_dir/tests/reference/fake_hub.py" --root "$hub_root" > "$work/hub.out" 2>&1 &
hub_pid=$!
volume=rosetta-docker-test-cache-$$
cleanup() {
  pm rm -f -t 0 "$container" "$container-hub" "$container-offline" >/dev/null 2>&1
  pm volume rm -f "$volume" >/dev/null 2>&1
  kill "$hub_pid" 2>/dev/null
  unmount_storage
}
hub_port=""
for _ in $(seq 100); do
  hub_port=$(awk '/^port /{print $2}' "$work/hub.out"); [[ -n $hub_port ]] && break; sleep 0.1
done
pm volume create "$volume" >/dev/null
# serve_hub NAME [ENV...]: runs the image with --model aren=test/aren and the cache volume; checks
# that it translates the published example and stops with status 0.
serve_hub() {
  local name=$1; shift
  local env=() port
  for e in "$@"; do env+=(-e "$e"); done
  port=$(free_port)
  if ! pm run -d --name "$name" --network=host --health-interval disable "${env[@]}" \
         -v "$volume:/cache" "$IMAGE" --model aren=test/aren --listen "127.0.0.1:$port" \
         --metrics_listen none > "$work/run-hub.out" 2>&1; then
    check 1 "podman run $name" "$(cat "$work/run-hub.out")"; return
  fi
  local serving=1
  for _ in $(seq 600); do
    "$client" health --address "127.0.0.1:$port" --deadline 1 >/dev/null 2>&1 && { serving=0; break; }
    [[ $(pm inspect --format '{{.State.Running}}' "$name") == true ]] || break
    sleep 0.1
  done
  out=$("$client" translate --address "127.0.0.1:$port" "$KNOWN_INPUT" 2>&1)
  check $([[ $serving == 0 && $out == "$KNOWN_OUTPUT" ]]; echo $?) \
    "$name: --model aren=test/aren (a Hub id) translates '$KNOWN_OUTPUT'" "$out
$(pm logs "$name" 2>&1 | tail -8)"
  pm stop -t "$GRACE" "$name" >/dev/null 2>&1
  check $([[ $(pm inspect --format '{{.State.ExitCode}}' "$name") == 0 ]]; echo $?) "$name: exit status 0 after podman stop"
}
if check $([[ -n $hub_port ]]; echo $?) "the fake Hub serves test/aren" "$(cat "$work/hub.out")"; then
  serve_hub "$container-hub" "HF_ENDPOINT=http://127.0.0.1:$hub_port"
  cached=$(pm run --rm --network=host --health-interval disable --entrypoint /bin/sh -v "$volume:/cache" "$IMAGE" \
    -c 'find /cache/huggingface/hub -name model.bin | head -1; stat -c %u /cache' 2>> "$work/podman.err")
  check $([[ $cached == */models--test--aren/snapshots/*/model.bin*10001 ]]; echo $?) \
    "the model is in the cache volume (Hugging Face layout, owned by the rosetta user)" "$cached"
  kill "$hub_pid" 2>/dev/null; wait "$hub_pid" 2>/dev/null
  serve_hub "$container-offline" "HF_HUB_OFFLINE=1"
fi

echo "docker_test: $(elapsed "$test_start") s in all (image build ${build_seconds} s)"
if (( failures > 0 )); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
