#!/usr/bin/python3
"""rosettad under load: continuous against static batching, side by side.

    /usr/bin/python3 bench/daemon_bench.py --build DIR [--model /tmp/ref/base] [--rounds 3]
        [--concurrency 1,8,32,64] [--rates 10,20,25] [--workloads greedy,encode,embed,embed-query]
        [--max-length 64] [--embedding-model /tmp/minilm]

DIR is a build directory holding server/rosettad and bench/rosetta-loadgen (this script builds
nothing). The model is the transformer-base-shaped MarianMT checkpoint with random weights that
bench/compare_translation.py uses (tests/reference/marian_reference.py make-checkpoint --shape
base --seed 1; written there when missing). The embedding model is a MiniLM-shaped
sentence-transformers checkpoint with random weights and the real BERT vocabulary of ../shared
(tests/reference/bert_reference.py make-checkpoint --shape minilm --layout st; written there when
missing); the daemons load it as `embed` beside `base` when an embed workload is asked for.

Two daemons run for the whole benchmark, one per batching mode (`rosettad --listen 127.0.0.1:0
--model base=MODEL --batching MODE --threads N`); `rosetta-loadgen` loads one of them at a time,
so the idle one only holds memory (its CPU time while idle is checked and reported). Each round
runs every (workload, clients) configuration on both daemons back to back, the order of the two
swapped from round to round; the tables show medians over the rounds of each figure.

Workloads (inputs: English sentences of a newstest file, mixed lengths, sent as text):
- greedy / beam4: Translate, one sentence per request, max_length fixed (--max-length) so that
  every run has the same cap; sentences end at their end-of-sentence token or at the cap
  (--forced-length sets min_length = max_length, every output exactly --max-length tokens, as
  bench/compare_translation.py does);
- encode: Encode with the translation model (mean of its encoder's final states), one sentence
  per request;
- embed: Encode with the embedding model (its own pooling), one sentence per request;
- embed-query: the same with the first 3 words of each sentence (short texts, as search queries).
The requests are the same at every concurrency: request i holds sentence i mod K, and every run
sends a whole number of passes over the K sentences. Clients = 1 is the "one at a time" baseline.

Closed loop (--concurrency): N clients, each sending its next request when the previous returns.
Open loop (--rates, translation workloads): requests sent at R per second on average, at the same
Poisson arrival times for both daemons (rosetta-loadgen --rate R --seed 1), whatever the server's
progress, as many independent callers would; latency counts from each request's scheduled time.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TESTSET = ROOT.parent / "shared/data/testsets/wmt/eng-deu/newstest2014.eng"
MODES = ("continuous", "static")
WORKLOADS = {
    # name: (loadgen method, beam size, model, words kept of each sentence (0: all))
    "greedy": ("translate", 1, "base", 0),
    "beam4": ("translate", 4, "base", 0),
    "encode": ("encode", 0, "base", 0),
    "embed": ("encode", 0, "embed", 0),
    "embed-query": ("encode", 0, "embed", 3),
}
DEFAULT_VOCAB = ROOT.parent / "shared/models/bert-vocab/vocab.txt"


def log(message):
    print(message, file=sys.stderr, flush=True)


def ensure_checkpoint(model):
    if not Path(model, "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tests/reference/marian_reference.py"),
                        "make-checkpoint", "--out", model, "--shape", "base", "--seed", "1"],
                       check=True)


def ensure_embedding_checkpoint(model, vocab):
    if not Path(model, "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tests/reference/bert_reference.py"),
                        "make-checkpoint", "--out", model, "--shape", "minilm", "--layout", "st",
                        "--vocab", str(vocab)], check=True)


def inputs_file(inputs_path, words):
    """The inputs of a workload: the sentences, or (words > 0) their first `words` words."""
    return Path(inputs_path) if not words else Path(inputs_path).with_suffix(f".{words}-words.txt")


def write_inputs(testset, count, path):
    """K sentences spread evenly over the test set (its mix of lengths), one per line."""
    lines = [line.strip() for line in Path(testset).read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    step = max(1, len(lines) // count)
    chosen = lines[::step][:count]
    Path(path).write_text("\n".join(chosen) + "\n", encoding="utf-8")
    return chosen


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon:
    def __init__(self, rosettad, models, mode, threads, extra, log_dir):
        self.mode = mode
        self.log_path = Path(log_dir, f"rosettad-{mode}.log")
        self.log_file = open(self.log_path, "w")
        cmd = [rosettad, "--listen", "127.0.0.1:0", "--batching", mode, "--threads", str(threads)]
        for name, path in models.items():
            cmd += ["--model", f"{name}={path}"]
        # Two daemons run at once: their Prometheus endpoints need ports of their own.
        if "--metrics_listen" in subprocess.run([rosettad, "--help"], capture_output=True,
                                                text=True).stdout:
            cmd += ["--metrics_listen", "127.0.0.1:0"]
        cmd += extra
        self.command = cmd
        self.process = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        self.address = None

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        pattern = re.compile(r"rosettad: serving on (\S+)")
        while time.monotonic() < deadline:
            match = pattern.search(self.log_path.read_text(errors="replace"))
            if match:
                self.address = match.group(1)
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"rosettad ({self.mode}) exited with {self.process.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        raise RuntimeError(f"rosettad ({self.mode}) not ready after {timeout} s")

    def cpu(self):
        return cpu_seconds(self.process.pid)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


# Threads that carry an open loop's requests: more than can be in flight at the rates measured.
OPEN_LOOP_THREADS = 256


def run_loadgen(loadgen, daemon, workload, clients, requests, args, inputs_path, warmup=None,
                rate=0):
    method, beam, model, words = WORKLOADS[workload]
    inputs = inputs_file(inputs_path, words)
    cmd = [loadgen, "--address", daemon.address, "--model", model, "--method", method,
           "--inputs", str(inputs), "--concurrency", str(clients),
           "--requests", str(requests), "--warmup",
           str(max(2, clients) if warmup is None else warmup), "--json"]
    if rate > 0:
        cmd += ["--rate", str(rate), "--seed", "1"]
    if method == "translate":
        cmd += ["--beam_size", str(beam), "--max_length", str(args.max_length)]
        if args.forced_length:
            cmd += ["--min_length", str(args.max_length)]
    cpu_before = daemon.cpu()
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    record = json.loads(out.strip().splitlines()[-1])
    record["server_cpu_seconds"] = daemon.cpu() - cpu_before
    record["load_average"] = load
    record["command"] = cmd
    return record


def requests_for(workload, clients, sentences, args):
    """A whole number of passes over the sentences, at least --requests-per-client per client
    (enough for the closed loop to spend most of the run at full concurrency)."""
    encodes = WORKLOADS[workload][0] == "encode"
    per_client = args.encode_requests_per_client if encodes else args.requests_per_client
    # Encode requests take milliseconds: at least --encode-min-requests, so that no run is a
    # fraction of a second.
    wanted = max(clients * per_client, args.encode_min_requests if encodes else 0)
    passes = max(1, -(-wanted // sentences))
    return passes * sentences


def load_key(record):
    """Results key: (workload, clients or "rate R", batching)."""
    load = f"rate {record['rate']:g}" if record.get("rate") else record["concurrency"]
    return (record["workload"], load, record["batching"])


def median(records, key):
    values = [key(r) for r in records]
    return statistics.median(values) if values else float("nan")


def summarize(records):
    return {
        "requests_per_second": median(records, lambda r: r["requests_per_second"]),
        "texts_per_second": median(records, lambda r: r["texts_per_second"]),
        "tokens_per_second": median(records, lambda r: r["output_tokens_per_second"]),
        "p50": median(records, lambda r: r["latency_ms"]["p50"]),
        "p95": median(records, lambda r: r["latency_ms"]["p95"]),
        "p99": median(records, lambda r: r["latency_ms"]["p99"]),
        "max": median(records, lambda r: r["latency_ms"]["max"]),
        "rows_per_step": median(records, lambda r: r.get("engine", {}).get("rows_per_step", 0)),
        # Wall time per decoding step, encoder passes of admitted sentences included.
        "ms_per_step": median(records, lambda r: 1e3 * r["seconds"] / max(
            1, r.get("engine", {}).get("decoding_steps", 0))),
        "texts_per_encode_batch": median(
            records, lambda r: r.get("engine", {}).get("texts_per_encode_batch", 0)),
        "tokens_per_text": median(records, lambda r: r["output_tokens_per_text"]),
        "server_cpu": median(records, lambda r: r["server_cpu_seconds"] / r["seconds"]),
        "client_cpu": median(records, lambda r: r["client_cpu_seconds"] / r["seconds"]),
        "failed": sum(r["failed"] for r in records),
        "errors": merge_errors(records),
        "requests": records[0]["requests"] if records else 0,
        "max_send_lag_ms": max((r.get("max_send_lag_ms", 0) for r in records), default=0),
        "rounds": len(records),
    }


def merge_errors(records):
    errors = {}
    for record in records:
        for code, count in record["errors"].items():
            errors[code] = errors.get(code, 0) + count
    return errors


def ratio(a, b):
    """a / b as "1.23x", or "-" when b is 0 (e.g. every request of a run failed)."""
    return f"{a / b:.2f}x" if b else "-"


def errors_cell(summary):
    """"0", or "CODE count, ..." for the runs' failed calls."""
    return ", ".join(f"{code} {count}" for code, count in sorted(summary["errors"].items())) or "0"


def print_header(header):
    """A Markdown table's header and alignment rows (column 1, the batching mode, left)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---:" if i != 1 else "---" for i in range(len(header))) + "|")


def fmt_ms(ms):
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def title_of(workload, args):
    method, beam, model, words = WORKLOADS[workload]
    if method == "translate":
        return (f"Translate, {'greedy' if beam == 1 else f'beam {beam}'}, max_length "
                f"{args.max_length}{' (forced: min_length = max_length)' if args.forced_length else ''}")
    if model == "base":
        return "Encode (the translation model's encoder)"
    return (f"Encode, embedding model ({Path(args.embedding_model).name})"
            + (f", the first {words} words of each sentence" if words else ""))


def print_tables(results, workloads, concurrencies, args):
    for workload in workloads:
        method = WORKLOADS[workload][0]
        title = title_of(workload, args)
        batch_column = "rows/step" if method == "translate" else "texts/batch"
        print(f"\n#### {title}\n")
        # One text per request: texts/s = requests/s.
        header = ["clients", "batching", "requests", "requests/s"]
        if method == "translate":
            header += ["generated tokens/s", "tokens/text"]
        header += ["p50 ms", "p95 ms", "p99 ms", "max ms", batch_column]
        if method == "translate":
            header += ["ms/step"]
        header += ["server CPU", "errors"]
        print_header(header)
        for clients in concurrencies:
            for mode in MODES:
                s = summarize(results.get((workload, clients, mode), []))
                cells = [str(clients), mode, str(s["requests"]), f"{s['requests_per_second']:.2f}"]
                if method == "translate":
                    cells += [f"{s['tokens_per_second']:.0f}", f"{s['tokens_per_text']:.1f}"]
                batch = s["rows_per_step"] if method == "translate" else s["texts_per_encode_batch"]
                cells += [fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(s["max"]),
                          f"{batch:.1f}"]
                if method == "translate":
                    cells += [f"{s['ms_per_step']:.1f}"]
                cells += [f"{s['server_cpu']:.2f}", errors_cell(s)]
                print("| " + " | ".join(cells) + " |")
        print()
        if 1 not in concurrencies:
            continue
        # One at a time, batching cannot matter: the baseline is the better of the two daemons'
        # medians at 1 client, so that a slow baseline run never inflates a ratio.
        base = max(summarize(results.get((workload, 1, mode), []))["requests_per_second"]
                   for mode in MODES)
        print(f"One at a time (1 client, the better of the two daemons): {base:.2f} requests/s.")
        for clients in concurrencies:
            if clients == 1:
                continue
            at = {mode: summarize(results.get((workload, clients, mode), [])) for mode in MODES}
            ratios = "; ".join(f"{mode} {ratio(at[mode]['requests_per_second'], base)}"
                               for mode in MODES)
            p99 = at["continuous"]["p99"], at["static"]["p99"]
            print(f"- {clients} clients: throughput vs one at a time (requests/s, same requests): "
                  f"{ratios}; p99 continuous {fmt_ms(p99[0])} ms vs static {fmt_ms(p99[1])} ms "
                  f"({ratio(*p99)})")


def print_open_loop_tables(results, workloads, rates, args):
    for workload in workloads:
        if WORKLOADS[workload][0] != "translate" or not rates:
            continue
        print(f"\n#### Open loop: {title_of(workload, args)}\n")
        header = ["offered requests/s", "batching", "requests", "requests/s", "p50 ms", "p95 ms",
                  "p99 ms", "max ms", "rows/step", "ms/step", "server CPU", "errors"]
        print_header(header)
        for rate in rates:
            for mode in MODES:
                s = summarize(results.get((workload, f"rate {rate:g}", mode), []))
                cells = [f"{rate:g}", mode, str(s["requests"]), f"{s['requests_per_second']:.2f}",
                         fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(s["max"]),
                         f"{s['rows_per_step']:.1f}", f"{s['ms_per_step']:.1f}",
                         f"{s['server_cpu']:.2f}", errors_cell(s)]
                print("| " + " | ".join(cells) + " |")
        print()
        for rate in rates:
            at = {mode: summarize(results.get((workload, f"rate {rate:g}", mode), []))
                  for mode in MODES}
            p50 = at["continuous"]["p50"], at["static"]["p50"]
            p99 = at["continuous"]["p99"], at["static"]["p99"]
            print(f"- {rate:g} requests/s: p99 continuous {fmt_ms(p99[0])} ms vs static "
                  f"{fmt_ms(p99[1])} ms ({ratio(*p99)}); p50 {fmt_ms(p50[0])} vs "
                  f"{fmt_ms(p50[1])} ms ({ratio(*p50)}); latest send after its time: "
                  f"{max(at[m]['max_send_lag_ms'] for m in MODES):.0f} ms")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=str(ROOT / "build"),
                   help="build directory with server/rosettad and bench/rosetta-loadgen")
    p.add_argument("--rosettad", help="daemon binary (default: BUILD/server/rosettad)")
    p.add_argument("--model", default="/tmp/ref/base")
    p.add_argument("--embedding-model", default="/tmp/minilm",
                   help="for the embed workloads (MiniLM-shaped, written there when missing)")
    p.add_argument("--testset", default=str(DEFAULT_TESTSET))
    p.add_argument("--sentences", type=int, default=64, help="distinct sentences (K)")
    p.add_argument("--workloads", default="greedy,encode,embed,embed-query",
                   help=f"of {','.join(WORKLOADS)}")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--rates", default="10,20,25",
                   help="open-loop rates, requests/s (translation workloads; empty: none)")
    p.add_argument("--open-requests", type=int, default=384,
                   help="requests per open-loop run (a whole number of passes is best)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--forced-length", action="store_true", help="min_length = max_length")
    p.add_argument("--requests-per-client", type=int, default=6,
                   help="translation: at least this many requests per client per run")
    p.add_argument("--encode-requests-per-client", type=int, default=24)
    p.add_argument("--encode-min-requests", type=int, default=768)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--daemon-args", default="", help="extra rosettad flags, space-separated")
    p.add_argument("--work-dir", default="/tmp/rosetta-daemon-bench")
    p.add_argument("--json-out", help="write every run's loadgen record here")
    p.add_argument("--tables-from", help="only print the tables of a --json-out file")
    args = p.parse_args()

    if args.tables_from:
        records = [json.loads(line) for line in Path(args.tables_from).read_text().splitlines()]
        results = {}
        for record in records:
            results.setdefault(load_key(record), []).append(record)
        workloads = list(dict.fromkeys(r["workload"] for r in records))
        print_tables(results, workloads,
                     sorted({r["concurrency"] for r in records if not r.get("rate")}), args)
        print_open_loop_tables(results, workloads, sorted({r["rate"] for r in records
                                                           if r.get("rate")}), args)
        return

    build = Path(args.build)
    rosettad = args.rosettad or str(build / "server/rosettad")
    loadgen = str(build / "bench/rosetta-loadgen")
    for binary in (rosettad, loadgen):
        if not os.access(binary, os.X_OK):
            sys.exit(f"missing {binary}: build it first (cmake --build {build} --target "
                     f"rosettad rosetta-loadgen)")
    workloads = [w for w in args.workloads.split(",") if w]
    for workload in workloads:
        if workload not in WORKLOADS:
            sys.exit(f"unknown workload {workload}")
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    rates = [float(r) for r in args.rates.split(",") if r]
    ensure_checkpoint(args.model)
    models = {"base": args.model}
    if any(WORKLOADS[w][2] == "embed" for w in workloads):
        ensure_embedding_checkpoint(args.embedding_model, DEFAULT_VOCAB)
        models["embed"] = args.embedding_model
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    inputs_path = work / "inputs.txt"
    sentences = write_inputs(args.testset, args.sentences, inputs_path)
    for words in {WORKLOADS[w][3] for w in workloads} - {0}:
        inputs_file(inputs_path, words).write_text(
            "".join(" ".join(s.split()[:words]) + "\n" for s in sentences), encoding="utf-8")
    words = sorted(len(s.split()) for s in sentences)
    log(f"{len(sentences)} sentences from {args.testset}: {words[0]} to {words[-1]} words, "
        f"median {statistics.median(words)}")

    started = time.monotonic()
    load_before = os.getloadavg()
    daemons = {mode: Daemon(rosettad, models, mode, args.threads, args.daemon_args.split(), work)
               for mode in MODES}
    results = {}
    records = []
    idle_cpu = {mode: 0.0 for mode in MODES}
    try:
        for daemon in daemons.values():
            daemon.wait_ready()
            log(f"rosettad ({daemon.mode}) serving on {daemon.address}")
        # A fresh daemon touches its memory (KV cache pages, workspaces) for the first time
        # during its first heavy run: do that before measuring, for both alike.
        for workload in workloads:
            for daemon in daemons.values():
                clients = max(concurrencies)
                run_loadgen(loadgen, daemon, workload, clients, clients, args, inputs_path,
                            warmup=0)
        log(f"daemons warmed up ({time.monotonic() - started:.0f} s so far)")
        for round_index in range(args.rounds):
            order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
            for workload in workloads:
                # (clients, open-loop rate, requests): closed-loop points, then open-loop ones.
                points = [(clients, 0, requests_for(workload, clients, len(sentences), args))
                          for clients in concurrencies]
                if WORKLOADS[workload][0] == "translate":
                    points += [(OPEN_LOOP_THREADS, rate, args.open_requests) for rate in rates]
                for clients, rate, requests in points:
                    for mode in order:
                        other = daemons[next(m for m in MODES if m != mode)]
                        other_cpu = other.cpu()
                        record = run_loadgen(loadgen, daemons[mode], workload, clients, requests,
                                             args, inputs_path, warmup=8 if rate else None,
                                             rate=rate)
                        idle_cpu[other.mode] += other.cpu() - other_cpu
                        record.update(round=round_index + 1, workload=workload, batching=mode)
                        records.append(record)
                        results.setdefault(load_key(record), []).append(record)
                        point = f"{rate:5g} req/s" if rate else f"{clients:3d} clients"
                        log(f"round {round_index + 1} {workload:6s} {point} {mode:10s}: "
                            f"{record['requests_per_second']:7.2f} req/s "
                            f"{record['output_tokens_per_second']:7.0f} tok/s  p50 "
                            f"{record['latency_ms']['p50']:7.0f}  p99 {record['latency_ms']['p99']:7.0f} ms"
                            f"  failed {record['failed']}  ({record['seconds']:.1f} s, "
                            f"{time.monotonic() - started:.0f} s so far)")
    finally:
        for daemon in daemons.values():
            daemon.stop()
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    if args.json_out:
        Path(args.json_out).write_text("\n".join(json.dumps(r) for r in records) + "\n")
    print_tables(results, workloads, concurrencies, args)
    print_open_loop_tables(results, workloads, rates, args)
    print(f"\nmedians of {args.rounds} rounds (each figure separately); {len(sentences)} sentences "
          f"({words[0]}-{words[-1]} words) from {Path(args.testset).name}; rosettad --threads "
          f"{args.threads}{' ' + args.daemon_args if args.daemon_args else ''}; "
          f"{elapsed / 60:.1f} min in all; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; CPU of the idle daemon while the other ran: "
          + ", ".join(f"{mode} {seconds:.1f} s" for mode, seconds in idle_cpu.items()))


if __name__ == "__main__":
    main()
