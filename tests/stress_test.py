#!/usr/bin/env python3
"""rosettad under a random mix of concurrent calls, good and bad, for a fixed time.

Threads send, at random: translations (two models, beam 1 to 4, several texts) whose results
must equal what each text gets alone; streams read to the end or cancelled part-way; calls
whose deadline passes mid-decoding; calls cancelled by the client; Encode; requests larger than
the queue; invalid requests (empty text, too many texts, unknown model, bad options, invalid
UTF-8 on the wire); ListModels and GetModel. Every call must end with a status its kind allows
(never UNKNOWN, INTERNAL or UNAVAILABLE). Afterwards the queue and the running batch must be
empty again, the same texts must translate as before, and a SIGTERM with calls in flight must let
them all finish and exit 0. Run against a ThreadSanitizer build (scripts/test.sh), the daemon's
first race report ends it and fails this test.
"""

import argparse
import collections
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from harness import Daemon, check, failures

LETTERS = ["ب", "ت", "ث", "ج", "ح", "خ", "د", "ذ", "ر", "ز", "س", "ش", "ص", "ك", "ل", "م", "ن"]
MODELS = ["aren", "aren-i8"]
MAX_TEXTS = 16     # --max_texts_per_request
MAX_QUEUED = 48    # --max_queued_texts
# Generous: under ThreadSanitizer the daemon runs tens of times slower, beside other tests.
CALL_TIMEOUT = 300


def random_text(rng, words=None):
    return " ".join(rng.choice(LETTERS) for _ in range(words or rng.randint(1, 12)))


def code_of(call, *args, **kwargs):
    """The status code name a unary call ends with ("OK" when it returns)."""
    try:
        call(*args, **kwargs)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name


class Load:
    """The random calls; counts outcomes per kind of call and records unexpected ones."""

    def __init__(self, pb, stub, channel, texts, expected, seed):
        self.pb = pb
        self.stub = stub
        self.texts = texts
        self.expected = expected  # (model, text, beam) -> best hypothesis alone
        self.seed = seed
        self.outcomes = collections.Counter()
        self.unexpected = []
        self.lock = threading.Lock()
        # Raw bytes on the wire: the request a client library would never build.
        self.raw_translate = channel.unary_unary("/rosetta.v1.Rosetta/Translate")

    def record(self, kind, code, allowed, details=""):
        with self.lock:
            self.outcomes[(kind, code)] += 1
            if code not in allowed:
                self.unexpected.append(f"{kind}: {code} {details}"[:300])

    def translate(self, rng):
        model = rng.choice(MODELS)
        beam = rng.choice([1, 2])
        texts = rng.sample(self.texts, rng.randint(1, 6))
        request = self.pb.TranslateRequest(model=model, texts=texts,
                                           options=self.pb.TranslateOptions(beam_size=beam))
        try:
            response = self.stub.Translate(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            self.record("translate", error.code().name, {"RESOURCE_EXHAUSTED"}, error.details())
            return
        got = [t.hypotheses[0].text for t in response.translations]
        want = [self.expected[(model, text, beam)] for text in texts]
        self.record("translate", "OK" if got == want else "WRONG RESULT", {"OK"},
                    f"{model} beam {beam}: {texts} -> {got}, alone {want}")

    def stream(self, rng):
        model = rng.choice(MODELS)
        texts = rng.sample(self.texts, rng.randint(1, 4))
        request = self.pb.TranslateRequest(model=model, texts=texts,
                                           options=self.pb.TranslateOptions(beam_size=1))
        call = self.stub.TranslateStream(request, timeout=CALL_TIMEOUT)
        stop_after = rng.choice([None, 0, 1, 2])  # messages to read before cancelling
        results = {}
        try:
            for n, message in enumerate(call):
                if message.HasField("translation"):
                    results[message.index] = message.translation.hypotheses[0].text
                if stop_after is not None and n >= stop_after:
                    call.cancel()
                    break
        except grpc.RpcError as error:
            allowed = {"CANCELLED", "RESOURCE_EXHAUSTED"}
            self.record("stream", error.code().name, allowed, error.details())
            return
        wrong = {i: text for i, text in results.items()
                 if text != self.expected[(model, texts[i], 1)]}
        if wrong:
            self.record("stream", "WRONG RESULT", {"OK"}, f"{model}: {texts} -> {results}")
        elif len(results) < len(texts):  # allowed only when this client cancelled
            allowed = {"cancelled part-way"} if stop_after is not None else set()
            self.record("stream", "cancelled part-way", allowed)
        else:
            self.record("stream", "OK", {"OK"})

    def long_request(self, rng):
        return self.pb.TranslateRequest(
            model=rng.choice(MODELS), texts=[random_text(rng) for _ in range(rng.randint(1, 4))],
            options=self.pb.TranslateOptions(beam_size=rng.randint(1, 4), min_length=200,
                                             max_length=200))

    def deadline(self, rng):
        code = code_of(self.stub.Translate, self.long_request(rng),
                       timeout=rng.uniform(0.001, 0.08))
        self.record("deadline", code, {"OK", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

    def cancel(self, rng):
        future = self.stub.Translate.future(self.long_request(rng), timeout=CALL_TIMEOUT)
        time.sleep(rng.uniform(0, 0.05))
        future.cancel()
        try:
            future.result()
            code = "OK"
        except grpc.FutureCancelledError:
            code = "CANCELLED"
        except grpc.RpcError as error:
            code = error.code().name
        self.record("cancel", code, {"OK", "CANCELLED", "RESOURCE_EXHAUSTED"})

    def encode(self, rng):
        normalize = rng.random() < 0.5
        request = self.pb.EncodeRequest(model=rng.choice(MODELS), normalize=normalize,
                                        texts=[random_text(rng) for _ in range(rng.randint(1, 8))])
        try:
            response = self.stub.Encode(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            self.record("encode", error.code().name, {"RESOURCE_EXHAUSTED"}, error.details())
            return
        good = len(response.embeddings) == len(request.texts) and all(
            len(e.values) == response.dimension and
            (not normalize or abs(sum(v * v for v in e.values) - 1) < 1e-3)
            for e in response.embeddings)
        self.record("encode", "OK" if good else "WRONG RESULT", {"OK"})

    def flood(self, rng):
        # Requests of the largest size allowed, sent by several threads at once, fill the queue.
        request = self.pb.TranslateRequest(
            model=rng.choice(MODELS), texts=[random_text(rng, 10) for _ in range(MAX_TEXTS)],
            options=self.pb.TranslateOptions(beam_size=4, max_length=64))
        code = code_of(self.stub.Translate, request, timeout=CALL_TIMEOUT)
        self.record("flood", code, {"OK", "RESOURCE_EXHAUSTED"})

    def invalid(self, rng):
        pb = self.pb
        cases = [
            ("empty text", pb.TranslateRequest(texts=["ب", ""]), "INVALID_ARGUMENT"),
            ("too many texts", pb.TranslateRequest(texts=["ب"] * (MAX_TEXTS + 1)),
             "INVALID_ARGUMENT"),
            ("unknown model", pb.TranslateRequest(model="nope", texts=["ب"]), "NOT_FOUND"),
            ("beam 0", pb.TranslateRequest(texts=["ب"], options=pb.TranslateOptions(beam_size=0)),
             "INVALID_ARGUMENT"),
            ("hypotheses > beam", pb.TranslateRequest(
                texts=["ب"], options=pb.TranslateOptions(beam_size=2, num_hypotheses=3)),
             "INVALID_ARGUMENT"),
            ("max_length 0", pb.TranslateRequest(
                texts=["ب"], options=pb.TranslateOptions(max_length=0)), "INVALID_ARGUMENT"),
            ("invalid UTF-8", b"\x12\x02\xff\xfe", "INVALID_ARGUMENT"),
            ("truncated message", b"\x12\x40ab", "INVALID_ARGUMENT"),
        ]
        name, request, want = rng.choice(cases)
        call = self.raw_translate if isinstance(request, bytes) else self.stub.Translate
        self.record(f"invalid ({name})", code_of(call, request, timeout=60), {want})

    def info(self, rng):
        if rng.random() < 0.5:
            code = code_of(self.stub.ListModels, self.pb.ListModelsRequest(), timeout=60)
        else:
            code = code_of(self.stub.GetModel, self.pb.GetModelRequest(name=rng.choice(MODELS)),
                           timeout=60)
        self.record("info", code, {"OK"})

    def run(self, worker, until):
        rng = random.Random(self.seed * 1000 + worker)
        actions = [(self.translate, 6), (self.stream, 3), (self.deadline, 2), (self.cancel, 2),
                   (self.encode, 2), (self.flood, 1), (self.invalid, 3), (self.info, 1)]
        functions = [a for a, _ in actions]
        weights = [w for _, w in actions]
        while time.time() < until:
            action = rng.choices(functions, weights)[0]
            try:
                action(rng)
            except Exception as error:  # a bug of this test, or a call that hung
                self.record(action.__name__, f"exception {type(error).__name__}", set(), error)


def exercise(args, pb, rpc, daemon):
    channel = grpc.insecure_channel(daemon.address)
    stub = rpc.RosettaStub(channel)

    # What each text gets alone, before any load.
    rng = random.Random(args.seed)
    texts = sorted({random_text(rng) for _ in range(12)})
    expected = {}
    for model in MODELS:
        for beam in (1, 2):
            for text in texts:
                response = stub.Translate(pb.TranslateRequest(
                    model=model, texts=[text], options=pb.TranslateOptions(beam_size=beam)),
                    timeout=CALL_TIMEOUT)
                expected[(model, text, beam)] = response.translations[0].hypotheses[0].text

    load = Load(pb, stub, channel, texts, expected, args.seed)
    until = time.time() + args.seconds
    workers = [threading.Thread(target=load.run, args=(i, until)) for i in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=args.seconds + 600)
    check(not any(w.is_alive() for w in workers), "every client's last call returned")
    check(daemon.process.poll() is None, "rosettad is still running after the load",
          daemon.process.returncode)
    print(f"{sum(load.outcomes.values())} calls in {args.seconds:.0f} s:")
    for (kind, code), count in sorted(load.outcomes.items()):
        print(f"  {kind:28s} {code:24s} {count}")
    check(not load.unexpected, "every call ended as its kind allows (results equal to each "
          "text's alone; no UNKNOWN, INTERNAL or UNAVAILABLE)", "\n".join(load.unexpected[:10]))
    for kind in ("translate", "stream", "encode"):
        check(load.outcomes[(kind, "OK")] > 0, f"some {kind} calls succeeded under the load")
    check(load.outcomes[("cancel", "CANCELLED")] + load.outcomes[("stream", "CANCELLED")] +
          load.outcomes[("stream", "cancelled part-way")] > 0, "some calls were cancelled")
    check(load.outcomes[("deadline", "DEADLINE_EXCEEDED")] > 0, "some deadlines passed")

    # Cancelled and expired work leaves nothing behind: queue and batch drain to empty.
    idle = False
    deadline = time.time() + 60
    while time.time() < deadline and not idle:
        stats = [stub.GetModel(pb.GetModelRequest(name=m), timeout=60).stats for m in MODELS]
        idle = all(s.queued_texts == 0 and s.running_sequences == 0 for s in stats)
        time.sleep(0.05)
    check(idle, "afterwards every model's queue and running batch are empty", stats)
    again = {key: stub.Translate(pb.TranslateRequest(
        model=key[0], texts=[key[1]], options=pb.TranslateOptions(beam_size=key[2])),
        timeout=CALL_TIMEOUT).translations[0].hypotheses[0].text for key in expected}
    check(again == expected, "afterwards every text translates as before the load")

    # SIGTERM with calls in flight: they finish, the daemon exits 0.
    results = [None] * 8
    tokens = 200

    def send(i):
        request = pb.TranslateRequest(
            model=MODELS[i % 2], texts=[random_text(random.Random(i)) for _ in range(2)],
            options=pb.TranslateOptions(beam_size=2, min_length=tokens, max_length=tokens))
        try:
            response = stub.Translate(request, timeout=CALL_TIMEOUT)
            results[i] = [t.output_tokens for t in response.translations]
        except grpc.RpcError as error:
            results[i] = error.code().name

    def counts():
        stats = [stub.GetModel(pb.GetModelRequest(name=m), timeout=60).stats for m in MODELS]
        return (sum(s.queued_texts + s.running_sequences for s in stats),
                sum(s.sentences for s in stats))

    _, finished_before = counts()
    senders = [threading.Thread(target=send, args=(i,)) for i in range(len(results))]
    for s in senders:
        s.start()
    # SIGTERM once the daemon has accepted all 16 sentences, while some are still decoding.
    accepted = in_flight = 0
    deadline = time.time() + 120
    while time.time() < deadline and accepted < 2 * len(results):
        in_flight, finished = counts()
        accepted = in_flight + finished - finished_before
        time.sleep(0.002)
    check(accepted == 2 * len(results) and in_flight > 0,
          "calls were decoding and waiting when SIGTERM was sent", (accepted, in_flight))
    exit_code = daemon.stop(CALL_TIMEOUT)
    for s in senders:
        s.join(timeout=CALL_TIMEOUT)
    check(all(r == [tokens, tokens] for r in results),
          "calls in flight at SIGTERM all finish with their tokens", results)
    check(exit_code == 0, "rosettad exits 0 after the drain", exit_code)
    log = "".join(daemon.log)
    check("Sanitizer" not in log, "no sanitizer report in the daemon's log")
    channel.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    source = Path(args.source).resolve()
    models = Path(args.shared) / "models/ctranslate2/v2"

    with tempfile.TemporaryDirectory(prefix="rosetta-stress-test-") as temporary:
        sys.path.insert(0, str(source / "client/python"))
        import rosetta_client  # noqa: E402
        rosetta_client.generate_stubs(rosetta_client.ROSETTA_PROTO,
                                      rosetta_client.ROSETTA_PROTO.parents[2], temporary)
        pb, rpc, _, _ = rosetta_client.load_stubs(temporary)

        daemon = Daemon(args.rosettad, "--model", f"aren={models / 'aren-transliteration'}",
                        "--model", f"aren-i8={models / 'aren-transliteration-i8'}",
                        "--threads", "2", "--max_texts_per_request", str(MAX_TEXTS),
                        "--max_queued_texts", str(MAX_QUEUED), "--drain_timeout", "300")
        try:
            if check(daemon.wait_serving(120), "rosettad serves", "".join(daemon.log)):
                exercise(args, pb, rpc, daemon)
        except Exception as error:  # the daemon died (a sanitizer report ends it), or a bug here
            check(False, "the test ran to its end", f"{type(error).__name__}: {error}")
        finally:
            if daemon.process.poll() is None:
                daemon.process.kill()
            if failures:
                print("the daemon's log ends with:\n" + "".join(daemon.log)[-6000:])

    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
