#!/usr/bin/python3
"""PyTorch eager baseline for MarianMT (OPUS-MT) translation throughput on the CPU.

Usage (Debian's interpreter, which has python3-torch):
    /usr/bin/python3 bench/pytorch_marian_bench.py --model DIR [--threads 2] [--sentences N]
        [--batch-1-sentences N] [--batches 1,8,32] [--beams 1,4] [--length 25] [--seed 0]
    /usr/bin/python3 bench/pytorch_marian_bench.py --model DIR --check

DIR is a checkpoint in Hugging Face MarianMT layout, e.g. one written by
`tests/reference/marian_reference.py make-checkpoint`. The benchmark translates `--sentences`
(default 512) deterministic random source sentences of `--length` (25) tokens (24 ordinary ids,
then EOS) and forces every output to exactly `--length` tokens with min_length = max_length =
length (EOS is banned until then). Batch size 1 runs `--batch-1-sentences` (default 64)
sentences, since it is slow; its records say so. For every batch size and beam size (1 =
greedy) it prints one JSON line:
    {"impl": "pytorch", "batch": B, "beam": K, "sentences": N, "target_tokens": T,
     "seconds": s, "tokens_per_second": T / s}
where T counts the output tokens of the returned (best) hypotheses and s covers encoding and
decoding (one untimed warm-up batch first). float32, torch.inference_mode(), torch threads
from --threads (default 2).

The implementation is batched: padded sources with key-padding masks in the encoder and the
cross-attention; a preallocated decoder self-attention K/V cache that is reordered when beams
move; cross-attention K/V computed once per sentence and shared by its beams (the K beams of a
sentence are the K query rows of one attention call). Decoding semantics are those of
tests/reference/marian_reference.py (log_softmax in float32, pad banned, EOS banned before
min_length; greedy argmax; beam search with the top 2K candidates, EOS candidates ranked < K
finish, sentence done at K finished or max_length). `--check` compares this batched
implementation with the unbatched reference on natural-length outputs (tokens must match
exactly, scores within 1e-3) and exits non-zero on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

# Debian's torch runs its matrix products in OpenBLAS, whose pthread pool fights torch's
# OpenMP threads on a 2-core machine (small products became 5-10x slower). OpenBLAS stays
# single-threaded inside torch's --threads OpenMP threads, which wait passively. Must be set
# before torch is imported; an explicit environment setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
import marian_reference as ref  # noqa: E402


class BatchedMarian(ref.MarianReference):
    """Batched encoder and incremental decoder; reuses the reference's weight lookups."""

    def encode_batch(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, S] (mask True on real tokens) -> encoder output [B, S, d]"""
        key_bias = padding_bias(mask)
        x = self.enc_embed[ids] * self.embed_scale + self.enc_pos[: ids.shape[1]]
        for i in range(self.cfg["encoder_layers"]):
            p = f"model.encoder.layers.{i}"
            q = self.query(x, p + ".self_attn.q_proj", self.heads)
            k = self.split_heads(self.linear(x, p + ".self_attn.k_proj"), self.heads)
            v = self.split_heads(self.linear(x, p + ".self_attn.v_proj"), self.heads)
            a = torch.softmax(q @ k.transpose(-1, -2) + key_bias, dim=-1) @ v
            a = self.linear(self.merge_heads(a), p + ".self_attn.out_proj")
            x = self.layer_norm(x + a, p + ".self_attn_layer_norm")
            x = self.layer_norm(x + self.ffn(x, p), p + ".final_layer_norm")
        return x

    def start_batch(self, enc: torch.Tensor, mask: torch.Tensor, beam: int,
                    max_length: int) -> dict:
        """Cross K/V once per sentence [B, h, S, hd]; self K/V cache [B*beam, h, T, hd]."""
        h, hd = self.dec_heads, self.d // self.dec_heads
        rows = enc.shape[0] * beam
        state = {"beam": beam, "cross_bias": padding_bias(mask),
                 "cross_k": [], "cross_v": [], "self_k": [], "self_v": []}
        for i in range(self.cfg["decoder_layers"]):
            p = f"model.decoder.layers.{i}.encoder_attn"
            state["cross_k"].append(self.split_heads(self.linear(enc, p + ".k_proj"), h))
            state["cross_v"].append(self.split_heads(self.linear(enc, p + ".v_proj"), h))
            state["self_k"].append(torch.empty(rows, h, max_length, hd))
            state["self_v"].append(torch.empty(rows, h, max_length, hd))
        return state

    def step_batch(self, state: dict, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """tokens [B*beam] at position t -> logits [B*beam, V]"""
        rows, beam, h = tokens.shape[0], state["beam"], self.dec_heads
        x = (self.dec_embed[tokens] * self.embed_scale + self.dec_pos[t])[:, None, :]
        for i in range(self.cfg["decoder_layers"]):
            p = f"model.decoder.layers.{i}"
            q = self.query(x, p + ".self_attn.q_proj", h)
            state["self_k"][i][:, :, t: t + 1] = self.split_heads(
                self.linear(x, p + ".self_attn.k_proj"), h)
            state["self_v"][i][:, :, t: t + 1] = self.split_heads(
                self.linear(x, p + ".self_attn.v_proj"), h)
            a = self.attend(q, state["self_k"][i][:, :, : t + 1], state["self_v"][i][:, :, : t + 1])
            a = self.linear(self.merge_heads(a), p + ".self_attn.out_proj")
            x = self.layer_norm(x + a, p + ".self_attn_layer_norm")
            # The beams of a sentence are the query rows of one attention over its source.
            q = self.query(x, p + ".encoder_attn.q_proj", h)  # [B*beam, h, 1, hd]
            q = q.reshape(-1, beam, h, q.shape[-1]).transpose(1, 2)  # [B, h, beam, hd]
            scores = q @ state["cross_k"][i].transpose(-1, -2) + state["cross_bias"]
            a = torch.softmax(scores, dim=-1) @ state["cross_v"][i]  # [B, h, beam, hd]
            a = a.transpose(1, 2).reshape(rows, h, 1, -1)
            a = self.linear(self.merge_heads(a), p + ".encoder_attn.out_proj")
            x = self.layer_norm(x + a, p + ".encoder_attn_layer_norm")
            x = self.layer_norm(x + self.ffn(x, p), p + ".final_layer_norm")
        return F.linear(x[:, 0, :], self.lm_head) + self.logits_bias

    @staticmethod
    def reorder_batch(state: dict, rows: torch.Tensor, length: int) -> None:
        for key in ("self_k", "self_v"):
            for cache in state[key]:
                cache[:, :, :length] = cache[rows, :, :length]

    def log_probs(self, logits: torch.Tensor, t: int, min_length: int) -> torch.Tensor:
        return ref.masked_log_probs(logits, t, min_length, self.pad_id, self.eos_id)


def padding_bias(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] bool -> additive attention bias [B, 1, 1, S] (0 or -inf)."""
    bias = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, -math.inf)
    return bias[:, None, None, :]


def pad_sources(sources: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad with pad_id; the mask (True on real tokens) comes from the lengths."""
    width = max(len(s) for s in sources)
    ids = torch.full((len(sources), width), pad_id, dtype=torch.long)
    for row, src in enumerate(sources):
        ids[row, : len(src)] = torch.tensor(src)
    lengths = torch.tensor([len(s) for s in sources])
    return ids, torch.arange(width)[None, :] < lengths[:, None]


def greedy_batch(model: BatchedMarian, sources: list[list[int]], max_length: int,
                 min_length: int = 0, length_penalty: float = 1.0) -> list[dict]:
    ids, mask = pad_sources(sources, model.pad_id)
    state = model.start_batch(model.encode_batch(ids, mask), mask, 1, max_length)
    batch = len(sources)
    tokens = torch.full((batch,), model.start_id, dtype=torch.long)
    totals = torch.zeros(batch)
    outputs = torch.full((batch, max_length), model.pad_id, dtype=torch.long)
    lengths = torch.full((batch,), -1, dtype=torch.long)  # -1: still running
    for t in range(max_length):
        logp = model.log_probs(model.step_batch(state, tokens, t), t, min_length)
        tokens = logp.argmax(dim=-1)  # first maximum = lowest id on ties
        running = lengths < 0
        totals = torch.where(running, totals + logp.gather(1, tokens[:, None])[:, 0], totals)
        outputs[:, t] = tokens
        lengths[running & (tokens == model.eos_id)] = t
        if bool((lengths >= 0).all()):
            break
    results = []
    for row in range(batch):
        ended = bool(lengths[row] >= 0)
        n = int(lengths[row]) if ended else max_length
        scored = n + int(ended)
        results.append({"tokens": outputs[row, :n].tolist(), "ended_with_eos": ended,
                        "score": float(totals[row]) / scored ** length_penalty})
    return results


def beam_batch(model: BatchedMarian, sources: list[list[int]], beam_size: int, max_length: int,
               min_length: int = 0, length_penalty: float = 1.0,
               num_hypotheses: int = 1) -> list[dict]:
    k, batch = beam_size, len(sources)
    ids, mask = pad_sources(sources, model.pad_id)
    state = model.start_batch(model.encode_batch(ids, mask), mask, k, max_length)
    scores = torch.full((batch, k), -math.inf)
    scores[:, 0] = 0.0  # one live beam at the start
    history = torch.zeros((batch, k, max_length), dtype=torch.long)
    inputs = torch.full((batch * k,), model.start_id, dtype=torch.long)
    finished: list[list[tuple]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    rank = torch.arange(2 * k)
    for t in range(max_length):
        logp = model.log_probs(model.step_batch(state, inputs, t), t, min_length)
        vocab = logp.shape[-1]
        flat = (scores.reshape(-1, 1) + logp).reshape(batch, k * vocab)
        values, index = top_candidates(flat, 2 * k)
        beam, token = index // vocab, index % vocab
        is_eos = token == model.eos_id
        for b, r in (is_eos[:, :k] & ~done[:, None]).nonzero().tolist():
            score = float(values[b, r]) / (t + 1) ** length_penalty
            finished[b].append((score, history[b, beam[b, r], :t].tolist(), True))
        # The first k non-EOS candidates (in rank order) become the live beams.
        keep = (is_eos.long() * 2 * k + rank).argsort(dim=1)[:, :k]
        beam, token, scores = beam.gather(1, keep), token.gather(1, keep), values.gather(1, keep)
        history = history.gather(1, beam[:, :, None].expand(-1, -1, max_length))
        history[:, :, t] = token
        newly_done = torch.tensor([len(f) >= k for f in finished]) & ~done
        if t + 1 == max_length:
            for b in (~done & ~newly_done).nonzero()[:, 0].tolist():
                for j in range(k):
                    score = float(scores[b, j]) / (t + 1) ** length_penalty
                    finished[b].append((score, history[b, j, : t + 1].tolist(), False))
        done |= newly_done
        if t + 1 == max_length or bool(done.all()):
            break
        rows = (torch.arange(batch)[:, None] * k + beam).reshape(-1)
        model.reorder_batch(state, rows, t + 1)
        inputs = token.reshape(-1)
    results = []
    for hyps in finished:
        ranked = sorted(hyps, key=lambda h: -h[0])[:num_hypotheses]
        results.append({"hypotheses": [{"tokens": toks, "score": s, "ended_with_eos": eos}
                                       for s, toks, eos in ranked]})
    return results


def top_candidates(flat: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the n largest values, descending; exact ties by lower flat index first.

    (Ties that straddle the n-th place are resolved by topk; with float scores that does
    not happen in practice.)
    """
    values, index = flat.topk(n, dim=1)
    index, order = index.sort(dim=1)
    values = values.gather(1, order)
    values, order = values.sort(dim=1, descending=True, stable=True)
    return values, index.gather(1, order)


def make_sources(count: int, length: int, config: dict, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [ref.random_source(rng, length, config) for _ in range(count)]


def translate(model: BatchedMarian, sources: list[list[int]], beam: int, length: int) -> int:
    """Translate with min_length = max_length = length; returns the output token count."""
    if beam == 1:
        results = greedy_batch(model, sources, length, min_length=length)
        return sum(len(r["tokens"]) for r in results)
    results = beam_batch(model, sources, beam, length, min_length=length)
    return sum(len(r["hypotheses"][0]["tokens"]) for r in results)


def benchmark(model: BatchedMarian, args, config: dict) -> None:
    for batch in args.batches:
        count = args.batch_1_sentences if batch == 1 else args.sentences
        sources = make_sources(count, args.length, config, args.seed)
        for beam in args.beams:
            translate(model, sources[:batch], beam, args.length)  # warm-up
            start = time.perf_counter()
            tokens = sum(translate(model, sources[i: i + batch], beam, args.length)
                         for i in range(0, count, batch))
            seconds = time.perf_counter() - start
            record = {"impl": "pytorch", "batch": batch, "beam": beam, "sentences": count,
                      "target_tokens": tokens, "seconds": round(seconds, 3),
                      "tokens_per_second": round(tokens / seconds, 1)}
            if batch == 1 and count != args.sentences:
                record["note"] = f"batch 1 runs {count} sentences (--batch-1-sentences)"
            print(json.dumps(record), flush=True)


CHECK_OPTIONS = [
    ("greedy", dict(max_length=64)),
    ("greedy", dict(max_length=64, min_length=5)),
    ("greedy", dict(max_length=25, min_length=25)),
    ("beam", dict(beam_size=4, max_length=64, num_hypotheses=4)),
    ("beam", dict(beam_size=2, max_length=64, length_penalty=0.6, num_hypotheses=2)),
    ("beam", dict(beam_size=4, max_length=8, num_hypotheses=4)),
    ("beam", dict(beam_size=4, max_length=25, min_length=25, num_hypotheses=1)),
]


def check(model: BatchedMarian, config: dict, seed: int, batch: int = 8) -> bool:
    """Batched vs. unbatched reference on sentences of varied lengths (padding exercised)."""
    rng = random.Random(seed + 7)
    sources = [ref.random_source(rng, rng.randint(1, 30), config) for _ in range(24)]
    ok = True
    for kind, options in CHECK_OPTIONS:
        mismatches, worst = 0, 0.0
        for i in range(0, len(sources), batch):
            chunk = sources[i: i + batch]
            if kind == "greedy":
                got = [[r] for r in greedy_batch(model, chunk, **options)]
                want = [[ref.greedy_search(model, s, **options)] for s in chunk]
            else:
                got = [r["hypotheses"] for r in beam_batch(model, chunk, **options)]
                want = [ref.beam_search(model, s, **options)["hypotheses"] for s in chunk]
            for g_hyps, w_hyps in zip(got, want):
                same = [g["tokens"] for g in g_hyps] == [w["tokens"] for w in w_hyps]
                mismatches += not same
                if same:
                    worst = max([worst] + [abs(g["score"] - w["score"])
                                           for g, w in zip(g_hyps, w_hyps)])
        passed = mismatches == 0 and worst < 1e-3
        ok &= passed
        print(json.dumps({"check": kind, **options, "sentences": len(sources), "batch": batch,
                          "token_mismatches": mismatches, "max_score_diff": worst,
                          "passed": passed}), flush=True)
    return ok


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="MarianMT checkpoint directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-1-sentences", type=int, default=64)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--beams", default="1,4")
    parser.add_argument("--length", type=int, default=25,
                        help="source length and forced output length, in tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="compare batched outputs with the per-sentence reference and exit")
    args = parser.parse_args(argv)
    args.batches = [int(x) for x in args.batches.split(",")]
    args.beams = [int(x) for x in args.beams.split(",")]
    args.batch_1_sentences = min(args.batch_1_sentences, args.sentences)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config, weights = ref.load_checkpoint(args.model)
    model = BatchedMarian(config, weights)
    with torch.inference_mode():
        if args.check:
            return 0 if check(model, config, args.seed) else 1
        benchmark(model, args, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
