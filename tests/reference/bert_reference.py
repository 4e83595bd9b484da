#!/usr/bin/python3
"""Independent PyTorch reference for BERT sentence embeddings (Hugging Face BertModel +
sentence-transformers Pooling/Normalize), for parity tests of engine/embedding_model.h.

Written from the published layout of Hugging Face's `modeling_bert.py` and sentence-transformers'
`models/Pooling.py` and `models/Normalize.py`; it needs neither package. Run it with Debian's
interpreter, `/usr/bin/python3` (python3-torch, python3-numpy).

Commands
--------
make-checkpoint --out DIR --shape {tiny,minilm} --seed N --vocab VOCAB.TXT --layout {plain,st}
                [--pooling {mean,cls,max}]
    A randomly initialised checkpoint in Hugging Face layout: config.json (model_type "bert"),
    model.safetensors (float32), vocab.txt, tokenizer_config.json. `plain`: BertForMaskedLM-style
    tensor names ("bert." prefix, plus a pooler the engine ignores), no sentence-transformers
    files (mean pooling by default). `st`: sentence-transformers layout: unprefixed names,
    modules.json, 1_Pooling/config.json (--pooling), 2_Normalize, sentence_bert_config.json
    (max_seq_length 256).
run --model DIR --texts FILE... --out-json FILE --out-tensors FILE [--threads N] [--lines N]
    Texts: a .json file is a list of texts; any other file gives its first --lines lines and
    one more text joining them all (longer than the model's limit). Tokenizes every text
    (tests/reference/bert_tokenizer_reference.py,
    truncating to the model's limit as sentence-transformers does) and embeds them all in padded
    batches of 16 with attention masks. Writes {"config": {...}, "cases": [{"text", "ids"}]} and
    tensors states.{i} [S_i, hidden] (final hidden states) and pooled.{i} [hidden] (after pooling
    and, when the model has it, Normalize).

Model semantics (float32)
-------------------------
x = LayerNorm(word[ids] + position[0..S-1] + token_type[0]); each layer:
x = LayerNorm(x + Wo·Attn(x)); x = LayerNorm(x + W2·gelu_erf(W1·x)); eps layer_norm_eps (1e-12).
Attention per head: softmax(q k^T / sqrt(head_dim) + mask) v, mask = finfo.min on padding keys.
Pooling over real tokens only ([CLS] and [SEP] included): mean = sum(x * m) / max(sum(m), 1e-9);
max = max over real tokens; cls = x[0]. Normalize: v / max(||v||, 1e-12).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bert_tokenizer_reference import BertTokenizer, read_vocab  # noqa: E402
from marian_reference import read_safetensors, write_safetensors  # noqa: E402

SHAPES = {
    "tiny": dict(hidden=64, layers=2, heads=4, ffn=128, max_positions=128),
    "minilm": dict(hidden=384, layers=6, heads=12, ffn=1536, max_positions=512),
}
TYPE_VOCAB = 2
LAYER_NORM_EPS = 1e-12


def make_checkpoint(args) -> None:
    shape = SHAPES[args.shape]
    vocab = read_vocab(args.vocab)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(args.seed)
    h, f = shape["hidden"], shape["ffn"]

    def normal(*size, std):
        return torch.randn(*size, generator=g) * std

    # Weights large enough that attention is far from uniform and every layer matters.
    def linear(name, n_out, n_in, tensors):
        tensors[name + ".weight"] = normal(n_out, n_in, std=1.0 / math.sqrt(n_in))
        tensors[name + ".bias"] = normal(n_out, std=0.1)

    def layer_norm(name, tensors):
        tensors[name + ".weight"] = 1.0 + normal(h, std=0.1)
        tensors[name + ".bias"] = normal(h, std=0.1)

    t: dict[str, torch.Tensor] = {}
    t["embeddings.word_embeddings.weight"] = normal(len(vocab), h, std=1.0)
    t["embeddings.position_embeddings.weight"] = normal(shape["max_positions"], h, std=0.5)
    t["embeddings.token_type_embeddings.weight"] = normal(TYPE_VOCAB, h, std=0.5)
    layer_norm("embeddings.LayerNorm", t)
    for i in range(shape["layers"]):
        p = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            linear(f"{p}.attention.self.{part}", h, h, t)
        linear(f"{p}.attention.output.dense", h, h, t)
        layer_norm(f"{p}.attention.output.LayerNorm", t)
        linear(f"{p}.intermediate.dense", f, h, t)
        linear(f"{p}.output.dense", h, f, t)
        layer_norm(f"{p}.output.LayerNorm", t)
    if args.layout == "plain":
        linear("pooler.dense", h, h, t)
        t = {"bert." + name: value for name, value in t.items()}
    write_safetensors(out / "model.safetensors", t)

    config = {
        "architectures": ["BertForMaskedLM" if args.layout == "plain" else "BertModel"],
        "model_type": "bert", "hidden_size": h, "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["heads"], "intermediate_size": f, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": shape["max_positions"], "type_vocab_size": TYPE_VOCAB,
        "initializer_range": 0.02, "layer_norm_eps": LAYER_NORM_EPS, "pad_token_id": 0,
        "position_embedding_type": "absolute", "vocab_size": len(vocab),
        "torch_dtype": "float32", "transformers_version": "4.40.0",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(args.vocab, out / "vocab.txt")
    tokenizer_config = {"do_lower_case": True, "model_max_length": shape["max_positions"],
                        "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]",
                        "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                        "mask_token": "[MASK]"}
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    if args.layout == "st":
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"},
        ]
        (out / "modules.json").write_text(json.dumps(modules, indent=2))
        (out / "1_Pooling").mkdir()
        pooling = {"word_embedding_dimension": h,
                   "pooling_mode_cls_token": args.pooling == "cls",
                   "pooling_mode_mean_tokens": args.pooling == "mean",
                   "pooling_mode_max_tokens": args.pooling == "max",
                   "pooling_mode_mean_sqrt_len_tokens": False,
                   "pooling_mode_weightedmean_tokens": False,
                   "pooling_mode_lasttoken": False, "include_prompt": True}
        (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
        (out / "2_Normalize").mkdir()
        (out / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": min(256, shape["max_positions"]),
                        "do_lower_case": False}, indent=2))
    print(f"checkpoint {out} ({args.shape}, {args.layout})")


class Bert:
    """Padded-batch BERT encoder on a state dict without the "bert." prefix."""

    def __init__(self, config: dict, weights: dict[str, torch.Tensor]):
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self.w = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        self.h = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config.get("layer_norm_eps", 1e-12)

    def ln(self, x, name):
        return F.layer_norm(x, (self.h,), self.w[name + ".weight"], self.w[name + ".bias"],
                            self.eps)

    def lin(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        positions = torch.arange(length)
        x = (self.w["embeddings.word_embeddings.weight"][ids]
             + self.w["embeddings.token_type_embeddings.weight"][torch.zeros_like(ids)]
             + self.w["embeddings.position_embeddings.weight"][positions][None])
        x = self.ln(x, "embeddings.LayerNorm")
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        dh = self.h // self.heads

        def heads(t):
            return t.view(batch, length, self.heads, dh).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q = heads(self.lin(x, f"{p}.attention.self.query"))
            k = heads(self.lin(x, f"{p}.attention.self.key"))
            v = heads(self.lin(x, f"{p}.attention.self.value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + additive
            context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length,
                                                                                    self.h)
            x = self.ln(x + self.lin(context, f"{p}.attention.output.dense"),
                        f"{p}.attention.output.LayerNorm")
            inner = F.gelu(self.lin(x, f"{p}.intermediate.dense"))
            x = self.ln(x + self.lin(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x


def pool(states: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    m = mask[:, :, None].float()
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return states.masked_fill(m == 0, -1e9).max(dim=1).values
    return (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def load_model(model_dir: Path):
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    max_tokens = min(config["max_position_embeddings"], tokenizer_config["model_max_length"])
    pooling, normalize = "mean", False
    if (model_dir / "modules.json").exists():
        for module in json.loads((model_dir / "modules.json").read_text()):
            if module["type"].endswith("Pooling"):
                p = json.loads((model_dir / module["path"] / "config.json").read_text())
                pooling = ("cls" if p["pooling_mode_cls_token"] else
                           "max" if p["pooling_mode_max_tokens"] else "mean")
            if module["type"].endswith("Normalize"):
                normalize = True
        st = json.loads((model_dir / "sentence_bert_config.json").read_text())
        max_tokens = min(max_tokens, st["max_seq_length"])
    tokenizer = BertTokenizer(read_vocab(model_dir / "vocab.txt"),
                              lower_case=tokenizer_config.get("do_lower_case", True))
    bert = Bert(config, read_safetensors(model_dir / "model.safetensors"))
    return bert, tokenizer, dict(max_tokens=max_tokens, pooling=pooling, normalize=normalize)


def tokenize(tokenizer: BertTokenizer, text: str, max_tokens: int) -> list[int]:
    ids = tokenizer.encode(text)
    if len(ids) > max_tokens:  # truncation=True: cut the pieces, keep [SEP]
        ids = ids[:max_tokens - 1] + ids[-1:]
    return ids


def embed(bert: Bert, batch: list[list[int]], facts: dict):
    length = max(len(ids) for ids in batch)
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    mask = torch.zeros(len(batch), length, dtype=torch.long)
    for i, seq in enumerate(batch):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    states = bert.forward(ids, mask)
    pooled = pool(states, mask, facts["pooling"])
    if facts["normalize"]:
        pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return states, pooled


def run(args) -> None:
    torch.set_num_threads(args.threads)
    bert, tokenizer, facts = load_model(Path(args.model))
    texts: list[str] = []
    for path in args.texts:
        if path.endswith(".json"):
            texts += json.loads(Path(path).read_text(encoding="utf-8"))
        else:
            lines = Path(path).read_text(encoding="utf-8").splitlines()[:args.lines]
            texts += lines
            texts.append(" ".join(lines))  # one text longer than any model's limit
    all_ids = [tokenize(tokenizer, text, facts["max_tokens"]) for text in texts]
    tensors, cases = {}, []
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            batch = all_ids[start:start + 16]
            states, pooled = embed(bert, batch, facts)
            for j, seq in enumerate(batch):
                tensors[f"states.{start + j}"] = states[j, :len(seq)]
                tensors[f"pooled.{start + j}"] = pooled[j]
    for text, ids in zip(texts, all_ids):
        cases.append({"text": text, "ids": ids})
    write_safetensors(args.out_tensors, tensors)
    Path(args.out_json).write_text(json.dumps({"config": facts, "cases": cases}, indent=1))
    print(f"{len(cases)} cases, longest {max(map(len, all_ids))} tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make-checkpoint")
    m.add_argument("--out", required=True)
    m.add_argument("--shape", choices=sorted(SHAPES), required=True)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--vocab", required=True)
    m.add_argument("--layout", choices=["plain", "st"], default="st")
    m.add_argument("--pooling", choices=["mean", "cls", "max"], default="mean")
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--texts", nargs="+", required=True)
    r.add_argument("--lines", type=int, default=40)
    r.add_argument("--out-json", required=True)
    r.add_argument("--out-tensors", required=True)
    r.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.command == "make-checkpoint":
        make_checkpoint(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
