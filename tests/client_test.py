#!/usr/bin/python3
"""End-to-end test of the clients: starts rosettad on a loopback port with the real
Arabic-to-Latin transliteration model and checks that `rosetta` (C++) and
client/python/rosetta_client.py print what the engine's own tool, rosetta-translate, prints for the
same inputs, plus embeddings, model listing, errors and exit statuses.

    client_test.py --rosettad BIN --client BIN --translate BIN --shared DIR --source DIR

Standard library only (and grpc, through the Python client).
"""

import argparse
import json
import math
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Daemon, check, failures

KNOWN_INPUT = "آ ت ز م و ن"
KNOWN_OUTPUT = "a t z m o n"
MODEL_NAME = "aren"
DIMENSION = 32  # d_model of the transliteration model
COMMAND_TIMEOUT = 120  # seconds for any one client run


def run(command, stdin_text=None):
    """Runs a command; returns (exit status, stdout, stderr)."""
    result = subprocess.run(command, input=stdin_text, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT)
    return result.returncode, result.stdout, result.stderr


def arabic_tokens(vocabulary_file):
    """The tokens of the source vocabulary made only of Arabic letters (no <s>, <unk>...)."""
    tokens = []
    for line in vocabulary_file.read_text(encoding="utf-8").splitlines():
        token = line.strip()
        if token and all("\u0600" <= c <= "\u06ff" and c.isalpha() for c in token):
            tokens.append(token)
    return tokens


def make_inputs(tokens, count=20, seed=1234):
    """`count` lines of space-separated letters, the model's published example first."""
    generator = random.Random(seed)
    lines = [KNOWN_INPUT]
    while len(lines) < count:
        lines.append(" ".join(generator.choice(tokens) for _ in range(generator.randint(1, 14))))
    return lines


def parse_plain(line):
    """'S1 ||| T1<tab>S2 ||| T2' -> [(S1, T1), (S2, T2)] (scores as floats)."""
    hypotheses = []
    for part in line.split("\t"):
        score, separator, text = part.partition(" ||| ")
        if not separator:
            raise ValueError(f"no ' ||| ' in {part!r}")
        hypotheses.append((float(score), text))
    return hypotheses


def compare_scored(expected_lines, actual_lines):
    """None if equal (texts exactly, scores to the 6 printed decimals), else the first difference.

    The engine tool and the server may batch the sentences differently, which can move a float
    score's last bit and so its rounding: a difference of one unit in the 6th decimal is allowed.
    """
    if len(expected_lines) != len(actual_lines):
        return f"{len(actual_lines)} lines instead of {len(expected_lines)}"
    for number, (expected, actual) in enumerate(zip(expected_lines, actual_lines)):
        try:
            e, a = parse_plain(expected), parse_plain(actual)
        except ValueError as error:
            return f"line {number}: {error}"
        if [t for _, t in e] != [t for _, t in a]:
            return f"line {number}: expected {expected!r}, got {actual!r}"
        if any(abs(se - sa) > 1e-6 + 1e-9 for (se, _), (sa, _) in zip(e, a)):
            return f"line {number}: scores differ: expected {expected!r}, got {actual!r}"
    return None


def json_to_plain(json_lines):
    """JSON Lines of translations -> the plain 'SCORE ||| TEXT' lines, checking each object."""
    lines = []
    for raw in json_lines:
        item = json.loads(raw)
        for hypothesis in item["hypotheses"]:
            if hypothesis["tokens"] != hypothesis["text"].split():
                raise ValueError(f"tokens do not spell the text: {raw}")
        if item["input_tokens"] <= 0 or item["output_tokens"] <= 0:
            raise ValueError(f"token counts not positive: {raw}")
        lines.append("\t".join(f"{h['score']:.6f} ||| {h['text']}" for h in item["hypotheses"]))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--client", required=True, help="the C++ client, rosetta")
    parser.add_argument("--translate", required=True, help="the engine tool, rosetta-translate")
    parser.add_argument("--shared", required=True, type=Path)
    parser.add_argument("--source", required=True, type=Path)
    args = parser.parse_args()

    model_dir = args.shared / "models/ctranslate2/v2/aren-transliteration"
    python_client = args.source / "client/python/rosetta_client.py"
    if not check((model_dir / "model.bin").is_file(), f"the model is at {model_dir}"):
        return 1
    inputs = make_inputs(arabic_tokens(model_dir / "source_vocabulary.txt"))
    stdin_text = "".join(line + "\n" for line in inputs)
    print(f"{len(inputs)} inputs, e.g. {inputs[1]!r}", flush=True)

    # The engine tool's output is the reference for each decoding configuration.
    configurations = {
        "greedy": ["--beam_size", "1"],
        "beam 2": ["--beam_size", "2"],
        "beam 2, 2 hypotheses": ["--beam_size", "2", "--num_hypotheses", "2"],
    }
    references = {}
    for name, options in configurations.items():
        status, out, err = run([args.translate, "--model", str(model_dir), "--scores", *options],
                               stdin_text)
        if not check(status == 0 and len(out.splitlines()) == len(inputs),
                     f"rosetta-translate {name}: one line per input", err):
            return 1
        references[name] = out.splitlines()
    check(references["greedy"][0] == f"{parse_plain(references['greedy'][0])[0][0]:.6f} ||| "
          f"{KNOWN_OUTPUT}", "rosetta-translate: the published example", references["greedy"][0])

    daemon = Daemon(args.rosettad, "--model", f"{MODEL_NAME}={model_dir}", "--threads", "2")
    try:
        daemon.wait_serving(180)
        address = daemon.address
        if not check(address is not None, "rosettad prints 'rosettad: serving on ADDRESS'",
                     "".join(daemon.log)):
            return 1
        print(f"rosettad serves on {address}", flush=True)
        run_checks(args, address, model_dir, python_client, inputs, stdin_text, references,
                   configurations)
    finally:
        exit_status = daemon.stop()
        check(exit_status == 0, "rosettad exits with status 0 after SIGTERM",
              f"exit status {exit_status}; log:\n" + "".join(daemon.log[-20:]))
    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


def run_checks(args, address, model_dir, python_client, inputs, stdin_text, references,
               configurations):
    client = [args.client]
    python = [sys.executable, str(python_client)]
    at = ["--address", address]

    # Ready: ListModels answers (UNAVAILABLE while the models load), and the health service.
    deadline = time.monotonic() + 120
    while True:
        status, out, err = run(client + ["models", *at, "--deadline", "5"])
        if status == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    check(status == 0, "rosetta models succeeds once the daemon serves", err)
    for service in ["", "rosetta.v1.Rosetta"]:
        status, out, err = run(python + ["--health", "--service", service, *at])
        check(status == 0 and out.strip() == "SERVING",
              f"rosetta_client.py --health --service '{service}' prints SERVING", out + err)
        status, out, err = run(client + ["health", "--service", service, *at])
        check(status == 0 and out == "SERVING\n",
              f"rosetta health --service '{service}': SERVING, status 0", out + err)
    status, out, err = run(client + ["health", "--service", "nope", *at])
    check(status == 1 and "NOT_FOUND" in err, "rosetta health --service nope: NOT_FOUND, status 1",
          f"status {status}, stdout {out!r}, stderr {err!r}")
    result = subprocess.run(client + ["health"], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, env={"ROSETTA_ADDRESS": address})
    check(result.returncode == 0 and result.stdout == "SERVING\n",
          "rosetta health with ROSETTA_ADDRESS instead of --address", result.stdout + result.stderr)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nobody = f"127.0.0.1:{unused.getsockname()[1]}"
    status, out, err = run(client + ["health", "--address", nobody, "--deadline", "2"])
    check(status == 1 and "UNAVAILABLE" in err and out == "",
          "rosetta health with no server: UNAVAILABLE, status 1", f"status {status}, {err!r}")

    # Models.
    status, out, err = run(client + ["models", *at])
    rows = [line.split() for line in out.splitlines()]
    check(status == 0 and rows[0][:2] == ["NAME", "KIND"] and
          [MODEL_NAME, "translation"] == rows[1][:2] and rows[1][-2:] == ["float32", "*"] and
          len(rows) == 2,
          "rosetta models lists the model as the default translation model", out + err)
    status, out, err = run(client + ["models", "--json", *at])
    models = [json.loads(line) for line in out.splitlines()] if status == 0 else []
    check(len(models) == 1 and models[0]["name"] == MODEL_NAME and models[0]["is_default"] and
          models[0]["kind"] == "MODEL_KIND_TRANSLATION", "rosetta models --json", out + err)
    status, out, err = run(client + ["model", MODEL_NAME, *at])
    info = json.loads(out) if status == 0 else {}
    check(info.get("name") == MODEL_NAME and info.get("embedding_dimension") == DIMENSION and
          info.get("format") == "ctranslate2",
          f"rosetta model {MODEL_NAME}: JSON with name, format, embedding_dimension {DIMENSION}",
          out + err)
    status, out, err = run(client + ["model", *at])
    check(status == 0 and json.loads(out).get("name") == MODEL_NAME,
          "rosetta model (no name) describes the default model", out + err)

    # The published example.
    status, out, err = run(client + ["translate", *at, KNOWN_INPUT])
    check(status == 0 and out == KNOWN_OUTPUT + "\n", f"rosetta translate '{KNOWN_INPUT}'",
          out + err)
    status, out, err = run(client + ["translate", *at, "--beam_size", "1", "--max_length", "3",
                                     KNOWN_INPUT])
    check(status == 0 and out == "a t z\n", "greedy with --max_length 3 gives 'a t z'", out + err)
    status, out, err = run(client + ["translate", *at, "--stream", "--beam_size", "1",
                                     KNOWN_INPUT])
    check(status == 0 and out == KNOWN_OUTPUT + "\n" and KNOWN_OUTPUT in err,
          "--stream, one input, greedy: the result on stdout, partial tokens on stderr",
          f"stdout {out!r} stderr {err!r}")

    # Stubs generated beforehand (--stubs), the way the client generates them.
    stubs = tempfile.TemporaryDirectory(prefix="client-test-stubs-")
    sys.path.insert(0, str(python_client.parent))
    import rosetta_client  # pylint: disable=import-outside-toplevel
    rosetta_client.generate_stubs(rosetta_client.ROSETTA_PROTO,
                                  rosetta_client.ROSETTA_PROTO.parents[2], stubs.name)

    # Every client and mode against the engine tool.
    for name, options in configurations.items():
        expected = references[name]
        variants = {
            "rosetta translate --scores (stdin)": (
                client + ["translate", *at, "--scores", *options], stdin_text),
            "rosetta translate --scores --batch_size 7 (3 requests)": (
                client + ["translate", *at, "--scores", "--batch_size", "7", *options], stdin_text),
            "rosetta translate --scores TEXT...": (
                client + ["translate", *at, "--scores", *options, "--", *inputs], None),
            "rosetta translate --scores --tokens": (
                client + ["translate", *at, "--scores", "--tokens", *options], stdin_text),
            "rosetta translate --scores --stream --batch_size 8": (
                client + ["translate", *at, "--scores", "--stream", "--batch_size", "8",
                          *options], stdin_text),
            "rosetta_client.py --scores": (python + [*at, "--scores", *options], stdin_text),
            "rosetta_client.py --scores --tokens": (
                python + [*at, "--scores", "--tokens", *options], stdin_text),
            "rosetta_client.py --stubs DIR --scores": (
                python + [*at, "--stubs", stubs.name, "--scores", *options], stdin_text),
        }
        for variant, (command, stdin) in variants.items():
            status, out, err = run(command, stdin)
            difference = compare_scored(expected, out.splitlines()) if status == 0 else err
            check(difference is None, f"{name}: {variant} = rosetta-translate", difference)
        for variant, command in {
                "rosetta translate --json": client + ["translate", *at, "--json", *options],
                "rosetta translate --json --stream": client + ["translate", *at, "--json",
                                                              "--stream", *options],
                "rosetta_client.py --json": python + [*at, "--json", *options]}.items():
            status, out, err = run(command, stdin_text)
            try:
                difference = (compare_scored(expected, json_to_plain(out.splitlines()))
                              if status == 0 else err)
            except (ValueError, KeyError) as error:
                difference = f"{error}\n{out}"
            check(difference is None, f"{name}: {variant} = rosetta-translate", difference)
        # Without --scores, the texts alone.
        status, out, err = run(client + ["translate", *at, *options], stdin_text)
        texts = ["\t".join(t for _, t in parse_plain(line)) for line in expected]
        check(status == 0 and out.splitlines() == texts, f"{name}: plain texts without --scores",
              out + err)

    # Embeddings.
    check_embeddings(client, python, at, inputs, stdin_text, info)

    # Errors: status 1 and the gRPC code name; usage errors: status 2.
    for what, command, code in [
            ("--beam_size 0", client + ["translate", *at, "--beam_size", "0", KNOWN_INPUT],
             "INVALID_ARGUMENT"),
            ("--model nope", client + ["translate", *at, "--model", "nope", KNOWN_INPUT],
             "NOT_FOUND"),
            ("encode --model nope", client + ["encode", *at, "--model", "nope", KNOWN_INPUT],
             "NOT_FOUND"),
            ("model nope", client + ["model", "nope", *at], "NOT_FOUND"),
            ("--deadline 0.000001", client + ["translate", *at, "--deadline", "0.000001",
                                              KNOWN_INPUT], "DEADLINE_EXCEEDED"),
            ("rosetta_client.py --beam_size 0", python + [*at, "--beam_size", "0", KNOWN_INPUT],
             "INVALID_ARGUMENT"),
            ("rosetta_client.py --model nope", python + [*at, "--model", "nope", KNOWN_INPUT],
             "NOT_FOUND")]:
        status, out, err = run(command)
        check(status == 1 and re.search(rf"^rosetta(_client\.py)?: {code}: .+", err, re.M)
              and out == "", f"{what}: exit status 1, '{code}: message' on stderr",
              f"status {status}, stdout {out!r}, stderr {err!r}")
    for what, command in [("unknown command", client + ["frobnicate"]),
                          ("unknown flag", client + ["translate", "--no_such_flag", "x"]),
                          ("flag of another command", client + ["models", "--beam_size", "2"]),
                          ("bad flag value", client + ["translate", "--beam_size", "two", "x"])]:
        status, out, err = run(command)
        check(status == 2 and err.startswith("rosetta: "), f"usage error ({what}): exit status 2",
              f"status {status}, stderr {err!r}")

    # A failing request in the middle of stdin: the lines of the batches before it, then the error.
    lines = inputs[:4] + [""] + inputs[5:]
    status, out, err = run(client + ["translate", *at, "--scores", "--batch_size", "2",
                                     "--beam_size", "2"], "".join(l + "\n" for l in lines))
    check(status == 1 and compare_scored(references["beam 2"][:4], out.splitlines()) is None and
          "INVALID_ARGUMENT" in err,
          "an empty line in the 3rd batch: 4 lines printed, then INVALID_ARGUMENT and status 1",
          f"status {status}, stdout {out!r}, stderr {err!r}")


def norm(values):
    return math.sqrt(sum(v * v for v in values))


def check_embeddings(client, python, at, inputs, stdin_text, info):
    status, out, err = run(client + ["encode", *at, "--normalize"], stdin_text)
    normalized = [[float(v) for v in line.split()] for line in out.splitlines()]
    check(status == 0 and len(normalized) == len(inputs) and
          all(len(v) == DIMENSION and abs(norm(v) - 1) < 1e-4 for v in normalized),
          f"rosetta encode --normalize: {len(inputs)} vectors of {DIMENSION} values, unit norm",
          out[:500] + err)
    status, out, err = run(client + ["encode", *at], stdin_text)
    raw = [[float(v) for v in line.split()] for line in out.splitlines()]
    cosines = [sum(a * b for a, b in zip(r, n)) / norm(r) for r, n in zip(raw, normalized)]
    check(status == 0 and len(raw) == len(inputs) and all(len(v) == DIMENSION for v in raw) and
          all(abs(c - 1) < 1e-4 for c in cosines) and any(abs(norm(r) - 1) > 1e-3 for r in raw),
          "rosetta encode: the same directions, not normalized", out[:500] + err)
    status, out, err = run(client + ["encode", *at, "--json", "--normalize"], stdin_text)
    items = [json.loads(line) for line in out.splitlines()] if status == 0 else []
    check(len(items) == len(inputs) and
          all(len(item["values"]) == DIMENSION and abs(norm(item["values"]) - 1) < 1e-5 and
              item["tokens"] >= len(text.split()) and item["truncated"] is False
              for item, text in zip(items, inputs)),
          "rosetta encode --json --normalize: values, tokens, truncated", out[:500] + err)
    status, out, err = run(python + [*at, "--encode", "--normalize"], stdin_text)
    from_python = [[float(v) for v in line.split()] for line in out.splitlines()]
    check(status == 0 and len(from_python) == len(normalized) and
          all(abs(a - b) < 1e-5 for u, v in zip(from_python, normalized) for a, b in zip(u, v)),
          "rosetta_client.py --encode --normalize = rosetta encode --normalize", out[:500] + err)

    limit = info.get("limits", {}).get("max_tokens_per_text", 0)
    if limit <= 0:
        print("SKIP: --truncate (the model reports no max_tokens_per_text)")
        return
    long_text = " ".join(["ب"] * (limit + 5))
    status, out, err = run(client + ["encode", *at, "--json", long_text])
    check(status == 1 and "INVALID_ARGUMENT" in err,
          f"rosetta encode of {limit + 5} tokens (limit {limit}): INVALID_ARGUMENT", err)
    status, out, err = run(client + ["encode", *at, "--json", "--truncate", long_text])
    item = json.loads(out) if status == 0 else {}
    check(item.get("truncated") is True and 0 < item.get("tokens", 0) <= limit and
          len(item.get("values", [])) == DIMENSION,
          f"rosetta encode --truncate of {limit + 5} tokens: truncated, at most {limit} tokens",
          out[:300] + err)


if __name__ == "__main__":
    sys.exit(main())
