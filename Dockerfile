# rosettad in a container: built on debian:bookworm, run on debian:bookworm-slim with only the
# shared libraries its binaries load.
#
#   docker build -t rosetta .                      (podman: add --format docker to keep HEALTHCHECK)
#   docker run -p 50051:50051 -p 9400:9400 -v /srv/models:/models:ro rosetta
#   docker run -p 50051:50051 -p 9400:9400 -v rosetta-cache:/cache rosetta \
#     --model enfr=Helsinki-NLP/opus-mt-en-fr
#
# Every directory inside /models is served as a model named after it (--models_dir /models); give
# flags after the image name to replace that (`... rosetta --model aren=/models/aren --threads 4`).
# Models given by Hugging Face Hub id are downloaded into the cache volume at /cache (HF_HOME) once
# and read from it on later starts. See docs/DEPLOYMENT.md.

# ---- build ------------------------------------------------------------------------------------
FROM debian:bookworm AS build

# The same build dependencies as a developer's machine.
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*

# The sources (.dockerignore leaves out the tests, benchmarks and build directories).
COPY . /src

# Parallel compile jobs; empty: every CPU of the build machine.
ARG BUILD_JOBS=
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/opt/rosetta \
          -DROSETTA_BUILD_TESTS=OFF -DROSETTA_BUILD_BENCH=OFF \
 && cmake --build /build -j "${BUILD_JOBS:-$(nproc)}" \
 && cmake --install /build --strip

# The Debian packages that own the shared libraries the installed binaries load (rosettad,
# rosetta, rosetta-translate and the SentencePiece shim): the runtime stage installs exactly these.
# Each library is followed to its real file (SONAME links are ldconfig's, libopenblas.so.0 is an
# alternative); one that no package owns stops the build.
RUN set -e; \
    for f in /opt/rosetta/bin/* /opt/rosetta/lib/rosetta/*.so; do ldd "$f"; done \
      | awk '$3 ~ /^\// {print $3}' | sort -u > /tmp/libraries.txt; \
    while read -r lib; do \
      real=$(readlink -f "$lib"); \
      dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "/usr$real" 2>/dev/null \
        || { echo "no Debian package owns $lib ($real)" >&2; exit 1; }; \
    done < /tmp/libraries.txt > /tmp/owners.txt; \
    cut -d: -f1 /tmp/owners.txt | sort -u > /opt/rosetta/runtime-packages.txt; \
    echo "runtime packages: $(tr '\n' ' ' < /opt/rosetta/runtime-packages.txt)"

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:bookworm-slim

COPY --from=build /opt/rosetta/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/runtime-packages.txt

# A fixed, numeric non-root user, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 rosetta \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin rosetta \
 && mkdir -p /models /cache \
 && chown 10001:10001 /cache

# bin/rosettad, bin/rosetta (the client, also the health check), bin/rosetta-translate, and
# lib/rosetta/librosetta_spm_shim.so, which rosettad finds relative to itself.
COPY --from=build /opt/rosetta/bin /opt/rosetta/bin
COPY --from=build /opt/rosetta/lib /opt/rosetta/lib

# ROSETTA_ADDRESS is where the `rosetta` client connects by default: the health check below and
# `docker exec CONTAINER rosetta translate ...`. Change it with --listen's port.
# HF_HOME: the Hugging Face cache of models given by Hub id (HF_ENDPOINT, HF_TOKEN and
# HF_HUB_OFFLINE=1 work as with huggingface_hub).
ENV PATH=/opt/rosetta/bin:$PATH \
    ROSETTA_ADDRESS=127.0.0.1:50051 \
    HF_HOME=/cache/huggingface

# Models: a read-only volume at /models (one directory per model), or Hub ids downloaded into a
# volume at /cache (a new named volume takes the directory's owner, the rosetta user).
WORKDIR /models
USER 10001:10001

# 50051: gRPC (rosetta.v1.Rosetta, grpc.health.v1.Health, reflection). 9400: Prometheus /metrics.
EXPOSE 50051 9400

# rosettad is PID 1 and handles SIGTERM itself: health NOT_SERVING, new requests UNAVAILABLE,
# requests in flight get --drain_timeout seconds (default 30), exit 0. Give `docker stop -t` (or
# Kubernetes' terminationGracePeriodSeconds) more than that.
STOPSIGNAL SIGTERM

# SERVING only once the models are loaded and until draining starts.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["rosetta", "health", "--service", "rosetta.v1.Rosetta", "--deadline", "4"]

ENTRYPOINT ["rosettad"]
CMD ["--models_dir", "/models"]
