#!/usr/bin/python3
"""Side-by-side translation throughput: Rosetta against PyTorch eager on the same checkpoint.

    /usr/bin/python3 bench/compare_translation.py --model DIR --rosetta-bench build/bench/translate_bench
        [--rounds 3] [--sentences 256] [--batch-1-sentences 32] [--batches 1,8,32] [--beams 1,4]

DIR is a MarianMT checkpoint (tests/reference/marian_reference.py make-checkpoint --shape base;
created there when missing). The machine is shared and noisy, so every configuration is run
`--rounds` times, Rosetta and PyTorch alternating, and the medians are compared. Prints a
Markdown table (target tokens per second) for docs/BENCHMARKS.md, with the CTranslate2 4.8.1
figures measured on this machine for the same workload (batch 32).

The machine's floating-point speed changes over time (a shared VM: OpenBLAS sgemm at 2048^3 on 2
threads gave about 377 GFLOP/s when the CTranslate2 figures were recorded, about 200 on other
days). Every round therefore also measures that sgemm (bench/gemm_bench, --gemm-bench), and the
table adds the CTranslate2 figures scaled by this run's sgemm speed over 377: an estimate of what
CTranslate2 would do on the machine as it is now, for a GEMM-bound engine on the same OpenBLAS.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# CTranslate2 4.8.1, float32 on OpenBLAS (AVX-512 kernels), 2 threads, batch 32, same workload.
CTRANSLATE2 = {(32, 1): 1168.0, (32, 4): 498.0}
# OpenBLAS sgemm, 2048^3, 2 threads, AVX-512 kernels, GFLOP/s on this machine when those figures
# were recorded (the project's notes on this CPU).
CTRANSLATE2_HOST_GFLOPS = 377.0
CALIBRATION = "OpenBlas/m:2048/n:2048/k:2048/threads:2"


def host_gflops(gemm_bench):
    """OpenBLAS sgemm 2048^3 on 2 threads now, GFLOP/s (bench/gemm_bench)."""
    out = subprocess.run([gemm_bench, f"--benchmark_filter=^{CALIBRATION}",
                          "--benchmark_min_time=1", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"][0]["FLOPS"] / 1e9


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--rosetta-bench", default=str(ROOT / "build/bench/translate_bench"))
    p.add_argument("--gemm-bench", default=str(ROOT / "build/bench/gemm_bench"),
                   help="measures the machine's sgemm speed each round (empty: skip)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--batch-1-sentences", type=int, default=32)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--beams", default="1,4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-pytorch", action="store_true")
    args = p.parse_args()

    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tests/reference/marian_reference.py"),
                        "make-checkpoint", "--out", args.model, "--shape", "base", "--seed", "1"],
                       check=True)
    batches = [int(b) for b in args.batches.split(",")]
    beams = [int(b) for b in args.beams.split(",")]
    results = {}  # (impl, batch, beam) -> [tokens/s]
    gflops = []  # the machine's sgemm speed, once per round
    for round_index in range(args.rounds):
        if args.gemm_bench:
            gflops.append(host_gflops(args.gemm_bench))
            print(f"round {round_index + 1}: OpenBLAS sgemm 2048^3: {gflops[-1]:.0f} GFLOP/s",
                  file=sys.stderr, flush=True)
        for beam in beams:
            for batch in batches:
                sentences = args.batch_1_sentences if batch == 1 else args.sentences
                common = ["--model", args.model, "--threads", str(args.threads)]
                rosetta = run_json([args.rosetta_bench, *common, f"--sentences={sentences}",
                                    f"--batch1_sentences={sentences}", f"--batch_sizes={batch}",
                                    f"--beams={beam}"])
                runs = [("rosetta", rosetta[0])]
                if not args.skip_pytorch:
                    torch = run_json([sys.executable, str(ROOT / "bench/pytorch_marian_bench.py"),
                                      *common, "--sentences", str(sentences), "--batch-1-sentences",
                                      str(sentences), "--batches", str(batch), "--beams", str(beam)])
                    runs.append(("pytorch", torch[0]))
                for impl, record in runs:
                    results.setdefault((impl, batch, beam), []).append(record["tokens_per_second"])
                    print(f"round {round_index + 1}: {impl:8s} batch {batch:3d} beam {beam}: "
                          f"{record['tokens_per_second']:8.1f} tokens/s", file=sys.stderr, flush=True)

    host = statistics.median(gflops) if gflops else None
    scale = host / CTRANSLATE2_HOST_GFLOPS if host else None
    header = ["batch", "beam", "Rosetta (tokens/s)", "PyTorch eager (tokens/s)",
              "Rosetta / PyTorch", "CTranslate2 4.8.1 (tokens/s)", "Rosetta / CTranslate2"]
    if scale:
        header += ["CTranslate2 scaled to this run's sgemm speed (estimate)",
                   "Rosetta / scaled CTranslate2"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for beam in beams:
        for batch in batches:
            ours = statistics.median(results[("rosetta", batch, beam)])
            theirs = statistics.median(results[("pytorch", batch, beam)]) if not args.skip_pytorch else None
            ct2 = CTRANSLATE2.get((batch, beam))
            cells = [str(batch), str(beam), f"{ours:.0f}",
                     f"{theirs:.0f}" if theirs else "-", f"{ours / theirs:.2f}x" if theirs else "-",
                     f"{ct2:.0f}" if ct2 else "-", f"{ours / ct2:.2f}x" if ct2 else "-"]
            if scale:
                cells += [f"{ct2 * scale:.0f}" if ct2 else "-",
                          f"{ours / (ct2 * scale):.2f}x" if ct2 else "-"]
            print("| " + " | ".join(cells) + " |")
    print(f"\nmedians of {args.rounds} rounds; {args.sentences} sentences per configuration "
          f"({args.batch_1_sentences} at batch 1); {args.threads} threads")
    if host:
        print(f"OpenBLAS sgemm 2048^3 on 2 threads during this run: {host:.0f} GFLOP/s (median of "
              f"{len(gflops)}: {', '.join(f'{g:.0f}' for g in gflops)}); "
              f"{CTRANSLATE2_HOST_GFLOPS:.0f} when the CTranslate2 figures were recorded")


if __name__ == "__main__":
    main()
