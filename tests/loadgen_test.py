#!/usr/bin/python3
"""bench/rosetta-loadgen against a real rosettad serving the aren-transliteration model: a closed
loop sends the asked number of requests from its clients; an open loop (--rate) sends them at the
given rate on average, so that it takes about requests / rate seconds however fast the server
answers, and reports latencies and the rate it was given.

    loadgen_test.py --rosettad BIN --loadgen BIN --shared DIR
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import Daemon, check, failures


def loadgen(binary, address, inputs, *flags):
    result = subprocess.run([binary, "--address", address, "--method", "translate", "--tokens",
                             "--inputs", str(inputs), "--json", *flags],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        return None, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--shared", required=True)
    args = parser.parse_args()
    model = Path(args.shared) / "models/ctranslate2/v2/aren-transliteration"

    daemon = Daemon(args.rosettad, "--model", f"aren={model}", "--threads", "2")
    try:
        if not check(daemon.wait_serving(60), "rosettad serves", "".join(daemon.log)):
            return 1
        address = daemon.address
        with tempfile.TemporaryDirectory() as tmp:
            inputs = Path(tmp) / "inputs.txt"
            inputs.write_text("آ ت ز م و ن\nب ي ت\nك ت ا ب\nم د ر س ة\n", encoding="utf-8")

            closed, err = loadgen(args.loadgen, address, inputs, "--concurrency", "4",
                                  "--requests", "32", "--warmup", "4")
            if check(closed is not None, "a closed-loop run succeeds", err):
                check(closed["ok"] == 32 and closed["failed"] == 0 and closed["rate"] == 0,
                      "closed loop: 32 requests, all answered, no rate", closed)
                check(closed.get("engine", {}).get("sentences") == 32,
                      "closed loop: the daemon decoded the 32 sentences", closed.get("engine"))

            # 40 Poisson arrivals at 20/s (seed 7: the last is due about 2.1 s after the first);
            # the aren model answers in milliseconds, so the run lasts as long as its schedule.
            rate, requests = 20.0, 40
            opened, err = loadgen(args.loadgen, address, inputs, "--concurrency", "16",
                                  "--requests", str(requests), "--rate", str(rate), "--seed", "7")
            if check(opened is not None, "an open-loop run succeeds", err):
                check(opened["ok"] == requests and opened["failed"] == 0,
                      "open loop: every request answered", opened)
                check(opened["rate"] == rate and opened["seed"] == 7,
                      "open loop: the report carries the rate and the seed", opened)
                check(opened["schedule_seconds"] > 0.25 * requests / rate,
                      "open loop: the arrival times spread over about requests / rate seconds",
                      opened["schedule_seconds"])
                check(opened["seconds"] >= opened["schedule_seconds"],
                      "open loop: requests are sent at their times, not at once",
                      (opened["seconds"], opened["schedule_seconds"]))
                check(opened["latency_ms"]["p50"] > 0 and
                      opened["latency_ms"]["p99"] >= opened["latency_ms"]["p50"],
                      "open loop: latency percentiles reported", opened["latency_ms"])

            # One thread for 30 requests due within about 15 ms: most go out late, and their
            # latency counts from their due time, so the slowest is at least the latest lag.
            late, err = loadgen(args.loadgen, address, inputs, "--concurrency", "1",
                                "--requests", "30", "--rate", "2000")
            if check(late is not None, "an open-loop run with too few threads succeeds", err):
                check(late["max_send_lag_ms"] > 0 and
                      late["latency_ms"]["max"] >= late["max_send_lag_ms"],
                      "open loop: latency counts from the due time, waits for a thread included",
                      (late["max_send_lag_ms"], late["latency_ms"]))

            bad = subprocess.run([args.loadgen, "--address", address, "--inputs", str(inputs),
                                  "--rate", "5", "--duration", "1"], capture_output=True,
                                 text=True, timeout=60)
            check(bad.returncode == 2 and "--rate" in bad.stderr,
                  "--rate with --duration is refused, naming the flag", bad.stderr)
    finally:
        daemon.process.terminate()
        daemon.wait(timeout=120)
    print(f"{len(failures)} failure(s)" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
