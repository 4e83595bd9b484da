#!/usr/bin/python3
"""A model of rosettad's translation worker, to compare batching rules without the machine's noise.

    python3 bench/batching_sim.py [--clients 32] [--rates 10,20,25]

The worker alternates encoder passes (admitting waiting sentences) and decoding steps. A step of
n running rows costs A + B * n ms, an encoder pass of t source tokens E0 + E1 * t ms (fitted to
bench/daemon_bench.py's rows/step and ms/step columns on the project machine; see
docs/BENCHMARKS.md). The requests are those of daemon_bench.py's greedy workload as the random-
weight model answers them: of 64 sentences of 28 source tokens on average, 21 run to the 64-token
cap, 30 stop after about 8 tokens and 13 after about 30.

Rules modelled: static (a batch of at most LIMIT sentences runs to completion) and continuous
(waiting sentences join the running batch, up to LIMIT, once the oldest has waited WAIT steps;
optionally not while a running sentence is older than HOLD steps). Loads: a closed loop of N
clients (each resends when answered, after a 0.5 ms round trip) and an open loop of Poisson
arrivals. Prints throughput and latency percentiles per rule. A model, not a measurement: it
shows which way a rule pushes p50 and p99, not by how much on the real machine.
"""

import argparse
import random

A, B = 5.0, 0.55  # ms per decoding step: A + B * rows
E0, E1 = 1.0, 0.2  # ms per encoder pass: E0 + E1 * source tokens
SOURCE_TOKENS = 28
OUTPUT_TOKENS = [64] * 21 + [8] * 30 + [30] * 13
ROUND_TRIP_MS = 0.5


def simulate(continuous, limit, arrivals=None, clients=0, wait=4, hold=None, requests=3000,
             warmup=300):
    """Latencies (ms) and throughput (requests/s). Closed loop with `clients`, or open loop with
    `arrivals` [(time ms, output tokens)]."""
    now, steps, queue, running, done = 0.0, 0, [], [], []
    sent = 0

    def arrive(at, tokens):
        queue.append({"arrival": at, "tokens": tokens, "made": 0, "queued_step": steps, "age": 0})

    if clients:
        for _ in range(clients):
            arrive(0.0, OUTPUT_TOKENS[sent % len(OUTPUT_TOKENS)])
            sent += 1
    while len(done) < requests:
        if arrivals is not None:
            while sent < len(arrivals) and arrivals[sent][0] <= now:
                arrive(*arrivals[sent])
                sent += 1
            if not queue and not running:
                now = arrivals[sent][0]
                continue
        due = bool(queue) and (not running or (continuous and steps - queue[0]["queued_step"] >= wait))
        if due and hold is not None and running and max(r["age"] for r in running) >= hold:
            due = False
        if due:
            admitted = []
            while queue and len(running) + len(admitted) < limit:
                admitted.append(queue.pop(0))
            if admitted:
                now += E0 + E1 * SOURCE_TOKENS * len(admitted)
                running += admitted
        if not running:
            continue
        now += A + B * len(running)
        steps += 1
        still = []
        for r in running:
            r["made"] += 1
            r["age"] += 1
            if r["made"] < r["tokens"]:
                still.append(r)
                continue
            done.append(now + ROUND_TRIP_MS - r["arrival"])
            if clients:
                arrive(now + ROUND_TRIP_MS, OUTPUT_TOKENS[sent % len(OUTPUT_TOKENS)])
                sent += 1
        running = still
    latencies = sorted(done[warmup:])
    n = len(latencies)
    return {"requests/s": len(done) / (now / 1000), "p50": latencies[n // 2],
            "p99": latencies[int(n * 0.99)]}


def poisson(rate, count, seed=1):
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate / 1000.0)
        out.append((t, OUTPUT_TOKENS[rng.randrange(len(OUTPUT_TOKENS))]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rates", default="10,20,25")
    args = p.parse_args()
    rules = [("static, limit 16", dict(continuous=False, limit=16)),
             ("static, limit 32", dict(continuous=False, limit=32))]
    for limit in (16, 24, 32, 48):
        for wait in (1, 4, 16):
            rules.append((f"continuous, limit {limit}, wait {wait}",
                          dict(continuous=True, limit=limit, wait=wait)))
    for hold in (16, 32, 48):
        rules.append((f"continuous, limit 32, wait 4, hold {hold}",
                      dict(continuous=True, limit=32, wait=4, hold=hold)))
    loads = [(f"closed loop, {args.clients} clients", dict(clients=args.clients))]
    for rate in (float(r) for r in args.rates.split(",") if r):
        loads.append((f"open loop, {rate:g} requests/s", dict(arrivals=poisson(rate, 3000))))
    for load_name, load in loads:
        print(f"\n{load_name}")
        for name, rule in rules:
            r = simulate(**rule, **load)
            print(f"  {name:38s} {r['requests/s']:6.1f} requests/s  p50 {r['p50']:6.0f} ms  "
                  f"p99 {r['p99']:6.0f} ms")


if __name__ == "__main__":
    main()
