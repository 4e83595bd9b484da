#!/usr/bin/python3
"""Writes PyTorch checkpoints with real torch.save for tests/pytorch_checkpoint_test.cc.

  make_pytorch_fixture.py tensors --out DIR
      DIR/<dtype>/pytorch_model.bin   torch.save(state_dict) for float32, float16 and bfloat16: several
                                      shapes (0-dim, empty, 3-D), tied weights, views with a storage
                                      offset, non-contiguous views, an nn.Parameter, an int64 buffer
      DIR/<dtype>/model.safetensors   the same tensors, contiguous, by an independent writer
      DIR/float32/protocol4.bin       torch.save(..., pickle_protocol=4)
      DIR/float32/deflated.bin        the archive rewritten with deflated entries
      DIR/float32/data.pkl            the pickle alone (for the fuzz test)
      DIR/sharded_safetensors/, DIR/sharded_pytorch/   two shards and their *.index.json
      DIR/bad/os_system.bin           a torch.save-like archive whose pickle calls os.system (GLOBAL
                                      + REDUCE), written byte by byte and never unpickled
      DIR/bad/float64.bin, DIR/bad/legacy.bin   a float64 tensor; the pre-1.6 format
  make_pytorch_fixture.py marian --model SRC --out DST
      DST: a copy of the Marian checkpoint directory SRC with its model.safetensors replaced by
      pytorch_model.bin (torch.save of the same state dict).

Run it with Debian's python3-torch (/usr/bin/python3).
"""
import argparse
import collections
import io
import json
import pickletools
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from marian_reference import read_safetensors  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SAFETENSORS_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                     torch.int64: "I64"}


def write_safetensors(path: Path, tensors: dict) -> None:
    """Writes contiguous copies of `tensors` in their own dtype (the raw bytes of each)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        # numpy has no bfloat16: take the bytes through a 16-bit integer view.
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(blobs))


def state_dict(dtype: torch.dtype) -> collections.OrderedDict:
    g = torch.Generator().manual_seed(7)
    randn = lambda *shape: (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    w = randn(6, 5)
    sd = collections.OrderedDict()
    sd["layer.weight"] = w
    sd["layer.bias"] = randn(6)
    sd["tied.weight"] = w              # the same tensor under two names: one storage
    sd["row"] = w[2]                   # a view with storage offset 10
    sd["columns"] = w[:, 1:3]          # non-contiguous, offset 1
    sd["transposed"] = w.t()           # non-contiguous
    sd["scalar"] = torch.tensor(1.25, dtype=dtype)
    sd["cube"] = randn(2, 3, 4)
    sd["empty"] = torch.zeros(0, 3, dtype=dtype)
    sd["param"] = torch.nn.Parameter(randn(3), requires_grad=False)
    sd["special"] = torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0, -0.0, 1e-7,
                                  65504.0, -3.0e38 if dtype != torch.float16 else -1.0],
                                 dtype=dtype)
    sd["position_ids"] = torch.arange(8).unsqueeze(0)  # an int64 buffer, as BERT has
    return sd


def rewrite_deflated(source: Path, target: Path) -> None:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def write_archive(path: Path, pickle_bytes: bytes) -> None:
    """An archive laid out as torch.save lays it out, with the given pickle."""
    pickletools.dis(pickle_bytes, out=io.StringIO())  # a well-formed pickle (disassembled, not run)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", b"3\n")


def cmd_tensors(args) -> None:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for name, dtype in DTYPES.items():
        d = out / name
        d.mkdir(parents=True)
        sd = state_dict(dtype)
        torch.save(sd, d / "pytorch_model.bin")
        write_safetensors(d / "model.safetensors", sd)
        # The reader must agree with torch itself on what was saved.
        loaded = torch.load(d / "pytorch_model.bin")
        assert all(torch.equal(loaded[k], sd[k]) or k == "special" for k in sd), name
    f32 = out / "float32"
    sd = state_dict(torch.float32)
    torch.save(sd, f32 / "protocol4.bin", pickle_protocol=4)
    rewrite_deflated(f32 / "pytorch_model.bin", f32 / "deflated.bin")
    with zipfile.ZipFile(f32 / "pytorch_model.bin") as z:
        (f32 / "data.pkl").write_bytes(z.read("pytorch_model/data.pkl"))

    names = list(sd)
    halves = [collections.OrderedDict((k, sd[k]) for k in names[:6]),
              collections.OrderedDict((k, sd[k]) for k in names[6:])]
    for kind, suffix in (("safetensors", ".safetensors"), ("pytorch", ".bin")):
        d = out / f"sharded_{kind}"
        d.mkdir()
        stem = "model" if kind == "safetensors" else "pytorch_model"
        weight_map = {}
        for i, half in enumerate(halves):
            shard = f"{stem}-0000{i + 1}-of-00002{suffix}"
            if kind == "safetensors":
                write_safetensors(d / shard, half)
            else:
                torch.save(half, d / shard)
            weight_map.update({k: shard for k in half})
        index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
        (d / f"{stem}{suffix}.index.json").write_text(json.dumps(index, indent=1))

    bad = out / "bad"
    bad.mkdir()
    # os.system("touch <bad>/pwned") through GLOBAL + REDUCE, the classic pickle exploit.
    command = f"touch {bad / 'pwned'}".encode()
    write_archive(bad / "os_system.bin",
                  b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(command)) + command +
                  b"q\x01\x85q\x02Rq\x03.")
    torch.save({"x": torch.ones(2, dtype=torch.float64)}, bad / "float64.bin")
    torch.save(sd, bad / "legacy.bin", _use_new_zipfile_serialization=False)
    print(json.dumps({"out": str(out), "tensors": len(sd)}))


def cmd_marian(args) -> None:
    src, dst = Path(args.model), Path(args.out)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = read_safetensors(src / "model.safetensors")
    torch.save(collections.OrderedDict(sorted(weights.items())), dst / "pytorch_model.bin")
    print(json.dumps({"out": str(dst), "tensors": len(weights)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tensors")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_tensors)
    p = sub.add_parser("marian")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_marian)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
