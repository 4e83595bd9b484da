#!/usr/bin/python3
"""PyTorch eager baseline of bench/embedding_bench: the same workload (N texts of L ids, batches
of B, pooling and normalisation included) on tests/reference/bert_reference.py's BERT, a padded
batch with an attention mask as Hugging Face runs it. Prints one JSON line per batch size.

    /usr/bin/python3 bench/pytorch_embedding_bench.py --model DIR [--texts 256] [--length 32]
        [--batch-sizes 1,32] [--threads 2]
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/reference"))
from bert_reference import embed, load_model  # noqa: E402  (sets the OpenMP/OpenBLAS policy)

import torch  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--texts", type=int, default=256)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bert, tokenizer, facts = load_model(Path(args.model))
    rng = random.Random(args.seed)
    cls, sep = tokenizer.vocab["[CLS]"], tokenizer.vocab["[SEP]"]
    vocab_size = len(tokenizer.vocab)
    texts = [[cls] + [rng.randrange(1000, vocab_size) for _ in range(args.length - 2)] + [sep]
             for _ in range(args.texts)]
    with torch.inference_mode():
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            embed(bert, texts[:batch], facts)  # warm-up
            start = time.perf_counter()
            for first in range(0, len(texts), batch):
                embed(bert, texts[first:first + batch], facts)
            seconds = time.perf_counter() - start
            print(json.dumps({"impl": "pytorch", "batch": batch, "length": args.length,
                              "texts": len(texts), "seconds": round(seconds, 4),
                              "sentences_per_second": round(len(texts) / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
