#!/usr/bin/python3
"""Side-by-side sentence-embedding throughput: Rosetta against PyTorch eager on one checkpoint.

    /usr/bin/python3 bench/compare_embedding.py --model DIR --rosetta-bench build/bench/embedding_bench
        [--rounds 5] [--texts 256] [--batch-1-texts 64] [--length 32] [--batches 1,32]

DIR is a BERT checkpoint in Hugging Face / sentence-transformers layout (made with
tests/reference/bert_reference.py make-checkpoint --shape minilm when missing). Each round runs
every batch size for Rosetta, then for PyTorch (alternating, since the machine is shared and
noisy); the table reports medians of sentences per second.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--rosetta-bench", default=str(ROOT / "build/bench/embedding_bench"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--batch-1-texts", type=int, default=64)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--batches", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", default=str(ROOT.parent / "shared/models/bert-vocab/vocab.txt"))
    args = p.parse_args()
    if not Path(args.model, "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tests/reference/bert_reference.py"),
                        "make-checkpoint", "--out", args.model, "--shape", "minilm", "--seed", "1",
                        "--vocab", args.vocab, "--layout", "st"], check=True)
    load_before = os.getloadavg()
    results = {}  # (impl, batch) -> [sentences/s]
    for _ in range(args.rounds):
        for batch in (int(b) for b in args.batches.split(",")):
            texts = args.batch_1_texts if batch == 1 else args.texts
            rosetta = run_json([args.rosetta_bench, f"--model={args.model}", f"--texts={texts}",
                                f"--length={args.length}", f"--batch_sizes={batch}",
                                f"--threads={args.threads}"])
            pytorch = run_json([sys.executable, str(ROOT / "bench/pytorch_embedding_bench.py"),
                                "--model", args.model, "--texts", str(texts), "--length",
                                str(args.length), "--batch-sizes", str(batch), "--threads",
                                str(args.threads)])
            for row in rosetta + pytorch:
                results.setdefault((row["impl"], batch), []).append(row["sentences_per_second"])
                print(json.dumps(row), file=sys.stderr)
    print("| batch | Rosetta (sentences/s) | PyTorch eager (sentences/s) | Rosetta / PyTorch |")
    print("|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batches.split(",")):
        r = statistics.median(results[("rosetta", batch)])
        t = statistics.median(results[("pytorch", batch)])
        print(f"| {batch} | {r:.0f} | {t:.0f} | {r / t:.2f}x |")
    load_after = os.getloadavg()
    print(f"\nmedians of {args.rounds} rounds; {args.length}-token texts; {args.threads} threads; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"(1-minute; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
