#!/usr/bin/python3
"""A small example client of rosettad, Rosetta's gRPC translation server.

It shows what a client in any language does: generate the stubs from the .proto file, open a
channel, fill a request, call, read the response, and handle gRPC errors by their status code.

    rosetta_client.py 'آ ت ز م و ن'                      # translate arguments
    printf 'آ ت\\nز م\\n' | rosetta_client.py --scores     # or stdin lines
    rosetta_client.py --beam_size 1 --json 'آ ت ز م و ن'  # JSON Lines, with tokens and scores
    rosetta_client.py --encode --normalize 'آ ت ز م و ن'  # embeddings
    rosetta_client.py --health                           # the standard health check
    rosetta_client.py --tls_ca_file ca.crt 'آ ت'          # a server with TLS (--tls_cert_file
                                                         # and --tls_key_file: mutual TLS)

Run it with Debian's Python, /usr/bin/python3, which has the packages python3-grpcio and
python3-grpc-tools (Debian 12's grpc_tools is too old for proto3 `optional` fields: the stubs are
then made with `protoc` and `grpc_python_plugin`, from protobuf-compiler and
protobuf-compiler-grpc).
"""

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

REPOSITORY = Path(__file__).resolve().parents[2]
ROSETTA_PROTO = REPOSITORY / "proto" / "rosetta" / "v1" / "rosetta.proto"
# The standard health service's definition, from Debian's grpc-proto package.
HEALTH_PROTO = Path("/usr/share/grpc-proto/grpc/health/v1/health.proto")


def generate_stubs(proto, include_dir, out_dir):
    """Writes the Python messages (*_pb2.py) and stubs (*_pb2_grpc.py) of `proto` to `out_dir`.

    The module path follows the proto's path under `include_dir`: with -I proto/,
    proto/rosetta/v1/rosetta.proto becomes the module rosetta.v1.rosetta_pb2. Keep the include root
    free of a grpc/ folder, or the generated package `grpc` would hide the real grpc module.
    """
    args = [f"-I{include_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", str(proto)]
    # grpcio-tools bundles a protoc: the usual way (pip install grpcio-tools).
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args],
                            capture_output=True, text=True)
    if result.returncode == 0:
        return
    # Its protoc may predate proto3 `optional` (Debian 12's is 3.5.1): use the system's.
    plugin = shutil.which("grpc_python_plugin")
    if shutil.which("protoc") is None or plugin is None:
        sys.exit(f"rosetta_client.py: cannot generate the stubs of {proto}:\n{result.stderr}"
                 "Install protobuf-compiler and protobuf-compiler-grpc, or pass --stubs.")
    subprocess.run(["protoc", f"--plugin=protoc-gen-grpc_python={plugin}", *args], check=True)


def load_stubs(stubs_dir):
    """Imports the generated modules from `stubs_dir`; health modules are None when absent."""
    sys.path.insert(0, str(stubs_dir))
    rosetta_pb2 = importlib.import_module("rosetta.v1.rosetta_pb2")
    rosetta_pb2_grpc = importlib.import_module("rosetta.v1.rosetta_pb2_grpc")
    try:
        health_pb2 = importlib.import_module("health_pb2")
        health_pb2_grpc = importlib.import_module("health_pb2_grpc")
    except ImportError:
        health_pb2 = health_pb2_grpc = None
    return rosetta_pb2, rosetta_pb2_grpc, health_pb2, health_pb2_grpc


def read_inputs(args):
    """The texts to send: the arguments, or else the lines of stdin."""
    if args.texts:
        return args.texts
    return [line.rstrip("\r\n") for line in sys.stdin]


def batches(items, size=32):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def set_inputs(request, pb2, texts, pre_tokenized):
    """Puts the inputs in a TranslateRequest or EncodeRequest, as texts or as token lists."""
    if pre_tokenized:
        request.tokenized.extend(pb2.TokenList(tokens=text.split()) for text in texts)
    else:
        request.texts.extend(texts)


def translate(stub, pb2, args):
    # Optional fields left unset take the model's defaults: pass only the options given.
    options = pb2.TranslateOptions(return_scores=args.scores or args.json, return_tokens=args.json)
    if args.beam_size is not None:
        options.beam_size = args.beam_size
    if args.num_hypotheses is not None:
        options.num_hypotheses = args.num_hypotheses

    for texts in batches(read_inputs(args)):
        request = pb2.TranslateRequest(model=args.model, options=options)
        set_inputs(request, pb2, texts, args.tokens)
        response = stub.Translate(request, timeout=args.deadline or None,
                                  metadata=args.metadata)
        # One Translation per input, in input order; hypotheses best first.
        for translation in response.translations:
            if args.json:
                print(json.dumps({
                    "hypotheses": [{"text": h.text, "tokens": list(h.tokens), "score": h.score}
                                   for h in translation.hypotheses],
                    "input_tokens": translation.input_tokens,
                    "output_tokens": translation.output_tokens,
                }, ensure_ascii=False))
            elif args.scores:
                print("\t".join(f"{h.score:.6f} ||| {h.text}" for h in translation.hypotheses))
            else:
                print("\t".join(h.text for h in translation.hypotheses))


def encode(stub, pb2, args):
    for texts in batches(read_inputs(args)):
        request = pb2.EncodeRequest(model=args.model, normalize=args.normalize)
        set_inputs(request, pb2, texts, args.tokens)
        response = stub.Encode(request, timeout=args.deadline or None,
                               metadata=args.metadata)
        for embedding in response.embeddings:
            if args.json:
                print(json.dumps({"values": list(embedding.values), "tokens": embedding.tokens,
                                  "truncated": embedding.truncated}))
            else:
                print(" ".join(f"{value:.6g}" for value in embedding.values))


def health(channel, health_pb2, health_pb2_grpc, args):
    """Prints the serving status; exit status 0 only when SERVING."""
    if health_pb2 is None:
        sys.exit(f"rosetta_client.py: no health stubs ({HEALTH_PROTO} is missing: "
                 "install Debian's grpc-proto)")
    stub = health_pb2_grpc.HealthStub(channel)
    # Service "" is the whole server; "rosetta.v1.Rosetta" is the translation service.
    response = stub.Check(health_pb2.HealthCheckRequest(service=args.service),
                          timeout=args.deadline or None)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if status == "SERVING" else 1


def api_key_metadata(args):
    """The metadata that carries the API key, for a server that requires one: the first key line
    of --api_key_file, else $ROSETTA_API_KEY; [] for none."""
    source, key = "ROSETTA_API_KEY", os.environ.get("ROSETTA_API_KEY", "")
    if args.api_key_file:
        source = f"--api_key_file {args.api_key_file}"
        try:
            lines = [line.strip() for line in args.api_key_file.read_text().splitlines()]
        except OSError as error:
            sys.exit(f"rosetta_client.py: --api_key_file: cannot read {args.api_key_file}: "
                     f"{error.strerror}")
        keys = [line for line in lines if line and not line.startswith("#")]
        if not keys:
            sys.exit(f"rosetta_client.py: --api_key_file: {args.api_key_file} holds no key")
        key = keys[0]
    key = key.strip()
    # gRPC metadata carries printable ASCII only.
    if any(not 0x21 <= ord(c) <= 0x7e for c in key):
        sys.exit(f"rosetta_client.py: {source}: the API key has a character other than "
                 "printable ASCII without spaces")
    return [("authorization", f"Bearer {key}")] if key else []


def open_channel(args):
    """A plaintext channel, or a TLS one when any --tls option is given."""
    if not (args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file
            or args.tls_server_name):
        return grpc.insecure_channel(args.address)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        sys.exit("rosetta_client.py: --tls_cert_file and --tls_key_file go together")

    def read(path):
        return path.read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(root_certificates=read(args.tls_ca_file),
                                               private_key=read(args.tls_key_file),
                                               certificate_chain=read(args.tls_cert_file))
    options = []
    if args.tls_server_name:
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    return grpc.secure_channel(args.address, credentials, options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="*", help="texts to translate; none: stdin lines")
    parser.add_argument("--address", default="localhost:50051")
    parser.add_argument("--model", default="", help="empty: the server's default model")
    parser.add_argument("--deadline", type=float, default=60, help="seconds per request")
    parser.add_argument("--beam_size", type=int, help="unset: the model's default")
    parser.add_argument("--num_hypotheses", type=int, help="unset: the model's default")
    parser.add_argument("--scores", action="store_true", help="print SCORE ||| TEXT")
    parser.add_argument("--json", action="store_true", help="print JSON Lines")
    parser.add_argument("--tokens", action="store_true",
                        help="inputs are space-separated tokens of the model's vocabulary")
    parser.add_argument("--encode", action="store_true", help="print embeddings instead")
    parser.add_argument("--normalize", action="store_true", help="unit-norm embeddings")
    parser.add_argument("--health", action="store_true", help="print the serving status")
    parser.add_argument("--service", default="", help="service of --health (empty: the server)")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's CAs (implied by --tls_*)")
    parser.add_argument("--tls_ca_file", type=Path,
                        help="PEM CA certificates the server's certificate must chain to")
    parser.add_argument("--tls_cert_file", type=Path,
                        help="PEM client certificate, for a server that requires one")
    parser.add_argument("--tls_key_file", type=Path, help="PEM private key of --tls_cert_file")
    parser.add_argument("--tls_server_name",
                        help="the name the server's certificate must carry, if not the host's")
    parser.add_argument("--api_key_file", type=Path,
                        help="file whose first line is the API key (default: $ROSETTA_API_KEY)")
    parser.add_argument("--stubs", type=Path,
                        help="folder of pre-generated stubs (default: generate them now)")
    args = parser.parse_args()
    args.metadata = api_key_metadata(args)

    with tempfile.TemporaryDirectory(prefix="rosetta-stubs-") as temporary:
        stubs_dir = args.stubs
        if stubs_dir is None:
            stubs_dir = Path(temporary)
            generate_stubs(ROSETTA_PROTO, ROSETTA_PROTO.parents[2], stubs_dir)
            if HEALTH_PROTO.exists():
                # -I at health.proto's own folder: see generate_stubs about grpc/ folders.
                generate_stubs(HEALTH_PROTO, HEALTH_PROTO.parent, stubs_dir)
        pb2, pb2_grpc, health_pb2, health_pb2_grpc = load_stubs(stubs_dir)

        with open_channel(args) as channel:
            try:
                if args.health:
                    return health(channel, health_pb2, health_pb2_grpc, args)
                stub = pb2_grpc.RosettaStub(channel)
                if args.encode:
                    encode(stub, pb2, args)
                else:
                    translate(stub, pb2, args)
            except grpc.RpcError as error:
                # Every failure is a status code (INVALID_ARGUMENT, NOT_FOUND, ...) and a message.
                print(f"rosetta_client.py: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
