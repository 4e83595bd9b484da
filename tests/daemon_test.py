#!/usr/bin/python3
"""The rosettad process seen from outside, with Python's gRPC (Debian's python3-grpcio): health
(Check and Watch) and server reflection as generic clients see them, malformed wire bytes, a
SIGTERM drain in which no accepted request is lost, a drain timeout (after SIGINT) that ends what
is left with UNAVAILABLE, and start-up failures.

    daemon_test.py --rosettad BIN --shared DIR --source DIR
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import Daemon, check, failures


def generate_stubs(source, out):
    """Python modules for rosetta.v1, grpc.health.v1 and the v1alpha reflection service, made with
    the system protoc (Debian's grpc_tools bundles a protoc too old for proto3 `optional`). The
    grpc/ protos are copied flat so that no generated `grpc` package shadows the grpc module."""
    flat = out / "flat"
    flat.mkdir(parents=True)
    for name in ("health/v1/health.proto", "reflection/v1alpha/reflection.proto"):
        shutil.copy(f"/usr/share/grpc-proto/grpc/{name}", flat / Path(name).name)
    plugin = shutil.which("grpc_python_plugin")
    for include, files in ((source / "proto", ["rosetta/v1/rosetta.proto"]),
                           (flat, ["health.proto", "reflection.proto"])):
        subprocess.run(["protoc", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}",
                        f"--plugin=protoc-gen-grpc_python={plugin}", *files], check=True,
                       cwd=include)
    sys.path.insert(0, str(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--source", required=True)
    # The drain test's sentences are forced to this many tokens; ThreadSanitizer builds, whose
    # engine runs tens of times slower, give fewer.
    parser.add_argument("--forced_tokens", type=int, default=250)
    args = parser.parse_args()
    model = Path(args.shared) / "models/ctranslate2/v2/aren-transliteration"
    if not model.is_dir():
        print(f"FAIL: the shared model is missing: {model}")
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        generate_stubs(Path(args.source).resolve(), Path(tmp))
        import grpc
        import health_pb2
        import health_pb2_grpc
        import reflection_pb2
        import reflection_pb2_grpc
        from rosetta.v1 import rosetta_pb2 as pb
        from rosetta.v1 import rosetta_pb2_grpc as rpc

        # --- start-up failures
        result = subprocess.run([args.rosettad, "--listen", "127.0.0.1:0", "--metrics_listen",
                                 "none", "--model", "broken=/nonexistent/model"],
                                capture_output=True, text=True, timeout=60)
        check(result.returncode == 1 and "/nonexistent/model" in result.stderr,
              "a model that fails to load stops start-up with exit 1 and names the path",
              result.stderr)
        t5 = Path(tmp) / "t5"
        t5.mkdir()
        (t5 / "config.json").write_text('{"model_type": "t5"}')
        result = subprocess.run([args.rosettad, "--listen", "127.0.0.1:0", "--metrics_listen",
                                 "none", "--model", f"t5={t5}"], capture_output=True, text=True,
                                timeout=60)
        check(result.returncode == 1 and '"t5" is not supported' in result.stderr and
              "supported:" in result.stderr and "marian" in result.stderr,
              "an unsupported architecture is named, with what is supported", result.stderr)
        result = subprocess.run([args.rosettad, "--model", str(model), "--threads", "many"],
                                capture_output=True, text=True, timeout=60)
        check(result.returncode == 2 and "--threads" in result.stderr,
              "a bad flag exits 2 and names the flag", result.stderr)

        # --- health, reflection, malformed bytes, then a drain with requests in flight
        # A drain timeout far above the ~5 s this drain takes on an idle machine: on a loaded one
        # (other jobs on the same cores) it took over 60 s.
        daemon = Daemon(args.rosettad, "--model", f"aren={model}", "--threads", "2",
                        "--drain_timeout", "300")
        if not check(daemon.wait_serving(60), "rosettad reports that it serves", "".join(daemon.log)):
            daemon.process.kill()
            return 1
        startup = "".join(daemon.log)
        check(f'loaded translation model "aren" from {model}' in startup and
              "float32 weights computing in float32" in startup and
              "limits per request: 128 texts" in startup and
              "per model: 1024 queued texts" in startup and
              f"serving on {daemon.address}" in startup,
              "the log says what was loaded, the limits and where it listens", startup)
        channel = grpc.insecure_channel(daemon.address)
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "rosetta.v1.Rosetta"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            check(status == health_pb2.HealthCheckResponse.SERVING,
                  f"health of {service or 'the server'!r} is SERVING", status)

        # A watcher (as Kubernetes' or a load balancer's) sees SERVING now, NOT_SERVING at the
        # drain below.
        watched = []
        watch = health.Watch(health_pb2.HealthCheckRequest(service="rosetta.v1.Rosetta"))

        def follow():
            try:
                for reply in watch:
                    watched.append(reply.status)
            except grpc.RpcError:
                pass  # the stream ends when the server stops

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(reflection.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="rosetta.v1.Rosetta"),
        ]), timeout=10))
        services = {s.name for s in replies[0].list_services_response.service}
        check({"rosetta.v1.Rosetta", "grpc.health.v1.Health"} <= services,
              "reflection lists rosetta.v1.Rosetta and grpc.health.v1.Health", services)
        descriptors = replies[1].file_descriptor_response.file_descriptor_proto
        check(len(descriptors) >= 1 and b"TranslateStream" in descriptors[0],
              "reflection serves the descriptor of rosetta.v1.Rosetta")

        raw = channel.unary_unary("/rosetta.v1.Rosetta/Translate",
                                  request_serializer=lambda b: b,
                                  response_deserializer=lambda b: b)
        raw_stream = channel.unary_stream("/rosetta.v1.Rosetta/TranslateStream",
                                          request_serializer=lambda b: b,
                                          response_deserializer=lambda b: b)
        def stream_call(request, timeout):
            return list(raw_stream(request, timeout=timeout))

        for name, call in (("Translate", raw), ("TranslateStream", stream_call)):
            try:
                call(b"\x12\x80\x80\x80\x80\x10", timeout=10)
                check(False, f"a malformed {name} message is refused")
            except grpc.RpcError as error:
                check(error.code() == grpc.StatusCode.INVALID_ARGUMENT and
                      "malformed request" in error.details(),
                      f"a malformed {name} message gets INVALID_ARGUMENT naming the problem",
                      f"{error.code()} {error.details()}")

        # Invalid UTF-8 in a string field: protobuf's parser logs an error for each; the daemon's
        # log takes at most 20 at once, then one per 3 s saying how many it dropped.
        invalid_utf8 = b"\x12\x03\xff\xfe\xfd"  # texts = [b"\xff\xfe\xfd"]
        refused = 0
        for _ in range(100):
            try:
                raw(invalid_utf8, timeout=10)
            except grpc.RpcError as error:
                refused += error.code() == grpc.StatusCode.INVALID_ARGUMENT
        check(refused == 100, "100 requests with invalid UTF-8 get INVALID_ARGUMENT", refused)
        time.sleep(3.2)
        try:
            raw(invalid_utf8, timeout=10)
        except grpc.RpcError:
            pass
        time.sleep(0.2)
        utf8_lines = [line for line in daemon.log if "invalid UTF-8" in line]
        check(20 <= len(utf8_lines) <= 22 and
              all(line.split(" ", 1)[1].startswith("rosettad: protobuf ERROR ") for line in utf8_lines) and
              "protobuf messages dropped before this one)" in utf8_lines[-1],
              "protobuf's complaints reach the log rate-limited (20, then one saying how many were "
              "dropped)", "".join(utf8_lines[-3:]) + f" ({len(utf8_lines)} lines)")

        stub = rpc.RosettaStub(channel)
        # 24 requests of 8 sentences x beam 4, forced to 250 tokens (--forced_tokens): more beams
        # than the batch holds, so some run and some wait when SIGTERM arrives.
        letters = ["ب", "ت", "ث", "ج", "ح", "خ", "د", "ذ", "ر", "ز", "س", "ش"]
        results = [None] * 24

        def send(i):
            texts = [" ".join(letters[(i + k + j) % 12] for j in range(1 + (i + k) % 9))
                     for k in range(8)]
            options = pb.TranslateOptions(beam_size=4, min_length=args.forced_tokens,
                                          max_length=args.forced_tokens)
            try:
                response = stub.Translate(pb.TranslateRequest(texts=texts, options=options),
                                          timeout=300)
                results[i] = ("OK", [t.output_tokens for t in response.translations])
            except grpc.RpcError as error:
                results[i] = (error.code().name, error.details())

        clients = [threading.Thread(target=send, args=(i,)) for i in range(24)]
        for c in clients:
            c.start()
        # SIGTERM only once the daemon has accepted all 24 x 8 sentences (running, waiting or
        # done): the test is about requests accepted before the signal.
        deadline = time.time() + 60
        while time.time() < deadline:
            stats = stub.GetModel(pb.GetModelRequest(), timeout=10).stats
            if stats.running_sequences + stats.queued_texts + stats.sentences == 24 * 8:
                break
            time.sleep(0.002)
        check(stats.running_sequences > 0 and stats.queued_texts > 0,
              "requests are decoding and waiting when SIGTERM is sent", stats)
        daemon.process.send_signal(signal.SIGTERM)
        while not any("draining" in line for line in daemon.log) and daemon.process.poll() is None:
            time.sleep(0.001)
        # Until the requests in flight finish, new ones are refused and health says NOT_SERVING.
        refused = None
        for _ in range(200):
            try:
                stub.Translate(pb.TranslateRequest(texts=["ب"]), timeout=10)
            except grpc.RpcError as error:
                refused = error
                break
            time.sleep(0.005)
        check(refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE,
              "a request sent while draining gets UNAVAILABLE",
              refused and f"{refused.code()} {refused.details()}")
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            check(status == health_pb2.HealthCheckResponse.NOT_SERVING,
                  "health is NOT_SERVING while draining", status)
        except grpc.RpcError as error:
            check(False, "health answers while draining", error)
        for _ in range(1000):  # up to 10 s on a loaded machine
            if health_pb2.HealthCheckResponse.NOT_SERVING in watched:
                break
            time.sleep(0.01)
        serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                                health_pb2.HealthCheckResponse.NOT_SERVING)
        check(watched[:1] == [serving] and not_serving in watched,
              "a health Watch sees SERVING, then NOT_SERVING when the drain starts", watched)
        for c in clients:
            c.join()
        exit_code = daemon.wait(120)
        check(all(r == ("OK", [args.forced_tokens] * 8) for r in results),
              "every request accepted before SIGTERM finished with all its tokens", results)
        check(exit_code == 0, "rosettad exits 0 after draining", exit_code)
        log = "".join(daemon.log)
        check("received SIGTERM" in log and "draining" in log and "stopped" in log,
              "the log tells the drain", log[-600:])
        channel.close()

        # --- a drain timeout: what is left ends explicitly with UNAVAILABLE, nothing hangs
        daemon = Daemon(args.rosettad, "--model", f"aren={model}", "--threads", "2",
                        "--drain_timeout", "0.05")
        check(daemon.wait_serving(60), "rosettad serves again")
        channel = grpc.insecure_channel(daemon.address)
        stub = rpc.RosettaStub(channel)
        results = [None] * 24
        clients = [threading.Thread(target=send, args=(i,)) for i in range(24)]
        for c in clients:
            c.start()
        while stub.GetModel(pb.GetModelRequest(), timeout=10).stats.queued_texts == 0:
            time.sleep(0.005)
        daemon.process.send_signal(signal.SIGINT)  # as SIGTERM (Ctrl-C in a terminal)
        for c in clients:
            c.join(timeout=120)
        exit_code = daemon.wait(120)
        check("received SIGINT" in "".join(daemon.log) and "drain timeout" in "".join(daemon.log),
              "SIGINT drains as SIGTERM does", "".join(daemon.log)[-600:])
        outcomes = [r[0] if r else "HUNG" for r in results]
        check(all(o in ("OK", "UNAVAILABLE") for o in outcomes) and "UNAVAILABLE" in outcomes,
              "after the drain timeout every request ended: finished or UNAVAILABLE", outcomes)
        check(all("shut" in r[1] for r in results if r and r[0] == "UNAVAILABLE"),
              "UNAVAILABLE says the server shut down", [r for r in results if r and r[0] != "OK"][:2])
        check(exit_code == 0, "rosettad exits 0 after a drain timeout", exit_code)
        channel.close()

        # --- SIGTERM while a model loads: a Hub that accepts connections but never answers
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        environment = dict(os.environ, HF_HOME=str(Path(tmp) / "hf-silent"),
                           HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}")
        daemon = Daemon(args.rosettad, "--model", "rosetta-test/never", env=environment)
        deadline = time.time() + 30
        while time.time() < deadline and not any("fetching" in line for line in daemon.log):
            time.sleep(0.01)
        daemon.process.send_signal(signal.SIGTERM)
        started = time.time()
        exit_code = daemon.wait(30)
        check(exit_code == 0 and time.time() - started < 5 and
              any("while loading models" in line for line in daemon.log),
              "SIGTERM while a model downloads ends rosettad at once with exit 0",
              f"exit {exit_code}: " + "".join(daemon.log)[-500:])
        silent.close()

        # --- a model by Hub id, from a fake Hub on loopback; then again with no Hub at all
        hub_root = Path(tmp) / "hub"
        shutil.copytree(model, hub_root / "rosetta-test" / "aren")
        fake_hub = subprocess.Popen([sys.executable, str(Path(args.source) / "tests/reference/fake_hub.py"),
                                     "--root", str(hub_root)], stdout=subprocess.PIPE, text=True)
        hub_port = fake_hub.stdout.readline().split()[1]
        environment = dict(os.environ, HF_HOME=str(Path(tmp) / "hf"),
                           HF_ENDPOINT=f"http://127.0.0.1:{hub_port}")
        for attempt in ("downloads", "uses the cache"):
            daemon = Daemon(args.rosettad, "--model", "rosetta-test/aren", "--threads", "1",
                            env=environment)
            served = daemon.wait_serving(60)
            log = "".join(daemon.log)
            check(served, f"rosettad serves a Hub model by id ({attempt})", log[-800:])
            if served:
                channel = grpc.insecure_channel(daemon.address)
                reply = rpc.RosettaStub(channel).Translate(
                    pb.TranslateRequest(model="aren", texts=["آ ت ز م و ن"]), timeout=30)
                check(reply.translations[0].hypotheses[0].text == "a t z m o n",
                      f"the Hub model translates ({attempt})")
                channel.close()
            if attempt == "downloads":
                check("downloading rosetta-test/aren/model.bin" in log,
                      "the log shows a progress line per file", log[-800:])
            else:
                check("no network access" in log, "the second start needs no network", log[-800:])
            daemon.process.send_signal(signal.SIGTERM)
            daemon.wait(60)
            fake_hub.terminate()
            fake_hub.wait(10)

    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
