#!/usr/bin/python3
"""rosettad's metrics seen by a real Prometheus server (Debian's prometheus): the daemon serves
/metrics, `promtool check metrics` accepts the exposition, Prometheus scrapes it, and PromQL finds
exactly the requests this test sent (some failing on purpose), their latency histograms and the
engine's counters.

    metrics_test.py --rosettad BIN --shared DIR --source DIR
"""

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from harness import check, failures


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def generate_stubs(source, out):
    plugin = shutil.which("grpc_python_plugin")
    subprocess.run(["protoc", f"-I{source / 'proto'}", f"--python_out={out}",
                    f"--grpc_python_out={out}", f"--plugin=protoc-gen-grpc_python={plugin}",
                    "rosetta/v1/rosetta.proto"], check=True, cwd=source / "proto")
    sys.path.insert(0, str(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--source", required=True)
    args = parser.parse_args()
    model = Path(args.shared) / "models/ctranslate2/v2/aren-transliteration"
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"FAIL: {tool} is not installed (Debian package prometheus; scripts/install-deps.sh --test)")
            return 1

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_stubs(Path(args.source).resolve(), tmp)
        import grpc
        from rosetta.v1 import rosetta_pb2 as pb
        from rosetta.v1 import rosetta_pb2_grpc as rpc

        metrics_port = free_port()
        daemon = subprocess.Popen([args.rosettad, "--listen", "127.0.0.1:0", "--metrics_listen",
                                   f"127.0.0.1:{metrics_port}", "--model", f"aren={model}",
                                   "--threads", "2"], stderr=subprocess.PIPE, text=True)
        address = None
        for line in daemon.stderr:
            if "serving on " in line:
                address = line.rsplit("serving on ", 1)[1].split()[0]
                break
        threading.Thread(target=lambda: [None for _ in daemon.stderr], daemon=True).start()
        prometheus = None
        try:
            if not check(address is not None, "rosettad serves"):
                return 1
            stub = rpc.RosettaStub(grpc.insecure_channel(address))

            # A known mix of requests: 7 translations, 3 refused options, 2 unknown models,
            # 4 embeddings, then 16 concurrent translations.
            for i in range(7):
                stub.Translate(pb.TranslateRequest(texts=["آ ت ز م و ن", "ب ت"][: 1 + i % 2]),
                               timeout=30)
            for _ in range(3):
                try:
                    stub.Translate(pb.TranslateRequest(
                        texts=["ب"], options=pb.TranslateOptions(beam_size=0)), timeout=30)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            for _ in range(2):
                try:
                    stub.Translate(pb.TranslateRequest(model="nope", texts=["ب"]), timeout=30)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND
            for _ in range(4):
                stub.Encode(pb.EncodeRequest(texts=["ب ت ث"]), timeout=30)
            # Load: 16 concurrent clients, so that decoding steps batch several sentences.
            letters = "ا ب ت ث ج ح خ د ذ ر ز س ش ص ض ط".split()
            burst = [threading.Thread(target=lambda i=i: stub.Translate(pb.TranslateRequest(
                texts=[" ".join(letters[i:] + letters[:i])],
                options=pb.TranslateOptions(beam_size=1, min_length=40, max_length=40)),
                timeout=60)) for i in range(16)]
            for thread in burst:
                thread.start()
            for thread in burst:
                thread.join()

            exposition = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                                  capture_output=True, text=True)
            check(lint.returncode == 0, "promtool check metrics accepts the exposition",
                  lint.stdout + lint.stderr)

            prometheus_port = free_port()
            config = tmp / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: rosettad\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{metrics_port}']\n")
            subprocess.run(["promtool", "check", "config", str(config)], check=True,
                           capture_output=True)
            prometheus = subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            api = f"http://127.0.0.1:{prometheus_port}/api/v1/query?query="

            def query(promql):
                try:
                    reply = json.loads(http_get(api + urllib.parse.quote(promql)))
                except OSError:
                    return None
                result = reply.get("data", {}).get("result", [])
                return float(result[0]["value"][1]) if result else None

            # The first scrape comes some seconds after start: wait for up == 1.
            deadline = time.time() + 60
            while time.time() < deadline and query('up{job="rosettad"}') != 1:
                time.sleep(0.5)
            check(query('up{job="rosettad"}') == 1, "Prometheus scrapes rosettad (up == 1)")

            expectations = [
                ('sum(rosetta_requests_total{method="Translate",code="OK",model="aren"})', 23),
                ('sum(rosetta_requests_total{method="Translate",code="INVALID_ARGUMENT"})', 3),
                ('sum(rosetta_requests_total{method="Translate",code="NOT_FOUND",model=""})', 2),
                ('sum(rosetta_requests_total{method="Encode",code="OK"})', 4),
                ('sum(rosetta_request_duration_seconds_count{method="Translate"})', 28),
                ('sum(rosetta_queue_duration_seconds_count{model="aren"})', 27),
                ('rosetta_model_info{model="aren",quantization="float32"}', 1),
                ('rosetta_running_sequences{model="aren"}', 0),
                ('rosetta_queue_capacity_texts{model="aren"}', 1024),
                # One model: it never waits for another's turn on the CPUs.
                ('rosetta_compute_wait_seconds_total{model="aren"}', 0),
            ]
            for promql, expected in expectations:
                value = None
                for _ in range(20):
                    value = query(promql)
                    if value == expected:
                        break
                    time.sleep(0.5)
                check(value == expected, f"PromQL {promql} == {expected}", f"got {value}")
            positive = [
                # Decoding steps that batched more than one sentence.
                'sum(rosetta_batch_sequences_count{model="aren"}) - '
                'sum(rosetta_batch_sequences_bucket{model="aren",le="1"})',
                'histogram_quantile(1, sum by (le) (rosetta_batch_sequences_bucket{model="aren"}))'
                ' - 1',
                'rosetta_generated_tokens_total{model="aren"}',
                'rosetta_input_tokens_total{model="aren"}',
                'rosetta_decoding_steps_total{model="aren"}',
                'histogram_quantile(0.99, sum by (le) (rosetta_request_duration_seconds_bucket))',
                'rosetta_kv_cache_bytes_capacity{model="aren"}',
                'process_resident_memory_bytes',
                'process_cpu_seconds_total',
            ]
            for promql in positive:
                value = query(promql)
                check(value is not None and value > 0, f"PromQL {promql} > 0", f"got {value}")
            # Only loaded models' names become labels: the unknown model "nope" is not one.
            check(query('count(rosetta_requests_total{model="nope"})') is None,
                  "an unknown model name never becomes a label")
        finally:
            if prometheus is not None:
                prometheus.terminate()
                prometheus.wait(30)
            daemon.terminate()
            check(daemon.wait(60) == 0, "rosettad exits 0 on SIGTERM")

    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
