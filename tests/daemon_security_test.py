#!/usr/bin/python3
"""rosettad with TLS and API keys, end to end: start-up errors for unusable certificate and key
files; translation over TLS through the C++ client (flags and ROSETTA_TLS_ variables), the Python
client and rosetta-loadgen; plaintext clients and clients trusting another CA refused, without
flooding the log; a certificate rotated while serving; mutual TLS; calls without a valid API key
refused with UNAUTHENTICATED while health stays open.

    daemon_security_test.py --rosettad BIN --client BIN --loadgen BIN --shared DIR --source DIR

Certificates are made for each run by tests/make_test_certificates.sh (openssl).
"""

import argparse
import calendar
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import Daemon, check, failures

KNOWN_INPUT = "آ ت ز م و ن"
KNOWN_OUTPUT = "a t z m o n"
TIMEOUT = 120  # seconds for any one command


def run(command, env=None, stdin_text=None):
    """Runs a command; returns (exit status, stdout, stderr)."""
    result = subprocess.run(command, input=stdin_text, capture_output=True, text=True,
                            timeout=TIMEOUT, env=env)
    return result.returncode, result.stdout, result.stderr


def start_failure(args, model_flags, *tls_flags):
    """rosettad with `tls_flags` must exit non-zero before serving; returns (status, log)."""
    daemon = Daemon(args.rosettad, *model_flags, *tls_flags)
    served = daemon.wait_serving(60)
    if served:
        daemon.stop()
        return 0, "".join(daemon.log)
    return daemon.wait(60), "".join(daemon.log)


def replace(path, source):
    """Replaces `path` with a copy of `source` in one rename, as a Secret update does."""
    shutil.copyfile(source, str(path) + ".new")
    os.replace(str(path) + ".new", path)


def certificate_expiry(path):
    """The certificate's notAfter, in seconds since the epoch (openssl x509 -enddate)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout
    when = out.strip().split("=", 1)[1]  # "Dec 23 07:25:33 2026 GMT"
    return float(calendar.timegm(time.strptime(when, "%b %d %H:%M:%S %Y %Z")))


def scrape(url):
    """The samples of /metrics at `url`: {'name{labels}': value}; {} when it cannot be read."""
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def wait_until(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.3)
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rosettad", required=True)
    parser.add_argument("--client", required=True, help="the C++ client, rosetta")
    parser.add_argument("--loadgen", required=True, help="bench/rosetta-loadgen")
    parser.add_argument("--shared", required=True, type=Path)
    parser.add_argument("--source", required=True, type=Path)
    args = parser.parse_args()

    model_dir = args.shared / "models/ctranslate2/v2/aren-transliteration"
    if not check((model_dir / "model.bin").is_file(), f"the model is at {model_dir}"):
        return 1
    model_flags = ["--model", f"aren={model_dir}", "--threads", "1"]
    python_client = [sys.executable, str(args.source / "client/python/rosetta_client.py")]

    with tempfile.TemporaryDirectory(prefix="rosetta-security-test-") as temporary:
        certs = Path(temporary) / "certs"
        for prefix in ["", "other-"]:
            subprocess.run([str(args.source / "tests/make_test_certificates.sh"), str(certs),
                            prefix], check=True)
        stubs = Path(temporary) / "stubs"
        stubs.mkdir()
        # The Python client's stubs once, not for every call.
        sys.path.insert(0, str(args.source / "client/python"))
        import rosetta_client  # noqa: E402
        rosetta_client.generate_stubs(rosetta_client.ROSETTA_PROTO,
                                      rosetta_client.ROSETTA_PROTO.parents[2], stubs)
        if rosetta_client.HEALTH_PROTO.exists():
            rosetta_client.generate_stubs(rosetta_client.HEALTH_PROTO,
                                          rosetta_client.HEALTH_PROTO.parent, stubs)
        python_client += ["--stubs", str(stubs)]

        check_start_errors(args, model_flags, certs)
        check_tls(args, model_flags, certs, python_client, Path(temporary) / "served")
        check_mutual_tls(args, model_flags, certs, python_client)
        check_api_keys(args, model_flags, python_client, Path(temporary), stubs)

    if failures:
        print(f"{len(failures)} check(s) failed:\n  " + "\n  ".join(failures))
        return 1
    print("all checks passed")
    return 0


def check_start_errors(args, model_flags, certs):
    cases = [
        (["--tls_cert_file", certs / "server.crt"], "--tls_cert_file needs --tls_key_file"),
        (["--tls_client_ca_file", certs / "ca.crt"], "--tls_client_ca_file needs"),
        (["--tls_cert_file", certs / "server.crt", "--tls_key_file", certs / "other-server.key"],
         "does not belong to the first certificate"),
        (["--tls_cert_file", certs / "missing.crt", "--tls_key_file", certs / "server.key"],
         f"--tls_cert_file: cannot read {certs / 'missing.crt'}"),
        (["--tls_cert_file", certs / "server.key", "--tls_key_file", certs / "server.key"],
         "no PEM certificate"),
        (["--tls_cert_file", certs / "server.crt", "--tls_key_file", certs / "server.key",
          "--tls_reload_seconds", "0"], "--tls_reload_seconds"),
    ]
    for flags, message in cases:
        status, log = start_failure(args, model_flags, *map(str, flags))
        check(status != 0 and message in log and "serving on" not in log,
              f"rosettad {' '.join(map(str, flags))[-60:]}: exits {status} saying '{message}'",
              log)


def check_tls(args, model_flags, certs, python_client, served):
    # The daemon reads copies that the test replaces, as a Secret volume would be updated.
    served.mkdir()
    shutil.copyfile(certs / "server.crt", served / "tls.crt")
    shutil.copyfile(certs / "server.key", served / "tls.key")
    daemon = Daemon(args.rosettad, *model_flags, "--tls_cert_file", str(served / "tls.crt"),
                    "--tls_key_file", str(served / "tls.key"), "--tls_reload_seconds", "1",
                    "--metrics_listen", "127.0.0.1:0")
    try:
        if not check(daemon.wait_serving(180), "rosettad with TLS serves", "".join(daemon.log)):
            return
        log = "".join(daemon.log)
        check("TLS: certificate CN=localhost issued by CN=Rosetta test CA" in log
              and "client certificates not requested" in log and " with TLS" in log,
              "its log names the certificate and says TLS", log)
        metrics_url = re.search(r"metrics on (http://\S+/metrics)", log)
        metrics_url = metrics_url.group(1) if metrics_url else None
        expiry = certificate_expiry(certs / "server.crt")
        values = scrape(metrics_url)
        check(values.get("rosetta_tls_certificate_expiry_timestamp_seconds") == expiry
              and values.get('rosetta_tls_certificate_updates_total{result="accepted"}') == 0
              and values.get("rosetta_tls_files_refused") == 0,
              "/metrics: the certificate's expiry, no update yet, files not refused",
              f"expiry {expiry}; {values}")
        port = daemon.address.rsplit(":", 1)[1]
        client = [args.client]
        for address in [f"127.0.0.1:{port}", f"localhost:{port}"]:
            status, out, err = run(client + ["translate", "--address", address, "--tls_ca_file",
                                             str(certs / "ca.crt"), KNOWN_INPUT])
            check(status == 0 and out.strip() == KNOWN_OUTPUT,
                  f"rosetta translate --tls_ca_file at {address}", f"{status} {out!r} {err}")
        at = ["--address", daemon.address]
        env = dict(os.environ, ROSETTA_TLS_CA_FILE=str(certs / "ca.crt"))
        status, out, err = run(client + ["health", *at], env=env)
        check(status == 0 and out.strip() == "SERVING",
              "rosetta health with ROSETTA_TLS_CA_FILE: SERVING", f"{status} {out!r} {err}")
        status, out, err = run(python_client + [*at, "--tls_ca_file", str(certs / "ca.crt"),
                                                KNOWN_INPUT])
        check(status == 0 and out.strip() == KNOWN_OUTPUT,
              "rosetta_client.py --tls_ca_file translates", f"{status} {out!r} {err}")
        inputs = served.parent / "inputs.txt"
        inputs.write_text(KNOWN_INPUT + "\n", encoding="utf-8")
        status, out, err = run([args.loadgen, *at, "--inputs", str(inputs), "--tokens",
                                "--concurrency", "4", "--requests", "16", "--json",
                                "--tls_ca_file", str(certs / "ca.crt")])
        try:
            errors = json.loads(out)["errors"]
        except (ValueError, KeyError):
            errors = None
        check(status == 0 and errors == {},
              "rosetta-loadgen --tls_ca_file: 16 requests, no errors", f"{status} {out} {err}")

        # Refused: plaintext, a client that trusts another CA, and a file that is no CA.
        status, out, err = run(client + ["health", *at])
        check(status == 1 and "UNAVAILABLE" in err and "may require TLS" in err
              and "Handshake failed" not in err,
              "plaintext rosetta health: UNAVAILABLE, a hint, no gRPC log line",
              f"{status} {out!r} {err}")
        status, out, err = run(client + ["health", *at, "--tls_ca_file",
                                         str(certs / "other-ca.crt")])
        check(status == 1 and "UNAVAILABLE" in err,
              "rosetta health trusting another CA: UNAVAILABLE", f"{status} {out!r} {err}")
        status, out, err = run(client + ["health", *at, "--tls_ca_file",
                                         str(certs / "ca.key")])
        check(status == 2 and "--tls_ca_file" in err and "no PEM certificate" in err,
              "rosetta health --tls_ca_file KEY: a usage error naming the file",
              f"{status} {out!r} {err}")

        # 61 failed handshakes: gRPC logs an error for each; the daemon lets 20 through at once,
        # then one per 3 s, and says how many it dropped.
        before = len(daemon.log)
        started = time.monotonic()
        for _ in range(60):
            run(client + ["health", *at, "--deadline", "2"])
        # The next line let through, once the bucket has refilled, says how many were dropped.
        time.sleep(3.5)
        run(client + ["health", *at, "--deadline", "2"])
        time.sleep(0.5)
        elapsed = time.monotonic() - started
        grpc_lines = [line for line in daemon.log[before:] if "grpc " in line]
        allowed = 20 + elapsed / 3 + 2
        check(5 <= len(grpc_lines) <= allowed
              and any("grpc messages dropped" in line for line in grpc_lines),
              f"61 plaintext clients in {elapsed:.1f} s: {len(grpc_lines)} gRPC log lines "
              f"(rate-limited: at most {allowed:.0f}), saying how many were dropped",
              "".join(daemon.log[before:][-10:]))

        # Rotation: the other CA's certificate, then a broken file, which is refused.
        replace(served / "tls.key", certs / "other-server.key")
        replace(served / "tls.crt", certs / "other-server.crt")
        other = ["health", *at, "--tls_ca_file", str(certs / "other-ca.crt")]
        check(wait_until(lambda: run(client + other)[0] == 0, 30),
              "after rotation, clients trusting the new CA get through", "".join(daemon.log[-5:]))
        check(any("TLS: new certificate CN=localhost issued by CN=Rosetta test CA other-" in line
                  for line in daemon.log), "the rotation is logged", "".join(daemon.log[-5:]))
        (served / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
        check(wait_until(lambda: any("error: TLS files changed" in line and "does not parse" in line
                                     for line in daemon.log), 30),
              "a broken update is logged", "".join(daemon.log[-5:]))
        time.sleep(3)
        status, out, err = run(client + other)
        check(status == 0, "after a broken update, the last good certificate still serves",
              f"{status} {out!r} {err}")
        values = scrape(metrics_url)
        check(values.get("rosetta_tls_certificate_expiry_timestamp_seconds")
              == certificate_expiry(certs / "other-server.crt")
              and values.get('rosetta_tls_certificate_updates_total{result="accepted"}') == 1
              and values.get('rosetta_tls_certificate_updates_total{result="refused"}', 0) >= 1
              and values.get("rosetta_tls_files_refused") == 1,
              "/metrics: the new certificate's expiry, one update accepted, the broken files "
              "refused", str(values))
    finally:
        status = daemon.stop()
        check(status == 0, "rosettad with TLS exits 0 on SIGTERM", "".join(daemon.log[-10:]))


def check_mutual_tls(args, model_flags, certs, python_client):
    daemon = Daemon(args.rosettad, *model_flags, "--tls_cert_file", str(certs / "server.crt"),
                    "--tls_key_file", str(certs / "server.key"), "--tls_client_ca_file",
                    str(certs / "ca.crt"))
    try:
        if not check(daemon.wait_serving(180), "rosettad with mutual TLS serves",
                     "".join(daemon.log)):
            return
        check(any("client certificates required (1 CA certificates)" in line
                  for line in daemon.log), "its log says client certificates are required",
              "".join(daemon.log))
        at = ["--address", daemon.address, "--tls_ca_file", str(certs / "ca.crt")]
        mine = ["--tls_cert_file", str(certs / "client.crt"), "--tls_key_file",
                str(certs / "client.key")]
        others = ["--tls_cert_file", str(certs / "other-client.crt"), "--tls_key_file",
                  str(certs / "other-client.key")]
        status, out, err = run([args.client, "translate", *at, *mine, KNOWN_INPUT])
        check(status == 0 and out.strip() == KNOWN_OUTPUT,
              "rosetta translate with a client certificate", f"{status} {out!r} {err}")
        status, out, err = run(python_client + [*at, *mine, KNOWN_INPUT])
        check(status == 0 and out.strip() == KNOWN_OUTPUT,
              "rosetta_client.py with a client certificate", f"{status} {out!r} {err}")
        for name, flags in [("without a client certificate", []),
                            ("with another CA's client certificate", others)]:
            status, out, err = run([args.client, "translate", *at, *flags, KNOWN_INPUT])
            check(status == 1 and "UNAVAILABLE" in err, f"rosetta translate {name}: UNAVAILABLE",
                  f"{status} {out!r} {err}")
    finally:
        status = daemon.stop()
        check(status == 0, "rosettad with mutual TLS exits 0 on SIGTERM",
              "".join(daemon.log[-10:]))


def check_api_keys(args, model_flags, python_client, temporary, stubs):
    keys_file = temporary / "keys"
    first, second = "k1-0123456789abcdef", "k2-FEDCBA9876543210"
    keys_file.write_text(f"# clients of service A\n{first}\n\n{second}\n")
    short = temporary / "short-keys"
    short.write_text(f"{first}\nshort-secret\n")
    for flags, message in [(["--api_keys_file", str(temporary / "missing")], "cannot read"),
                           (["--api_keys_file", str(short)], f"{short}:2: the key has 12")]:
        status, log = start_failure(args, model_flags, *flags)
        check(status != 0 and message in log and "short-secret" not in log,
              f"rosettad {' '.join(flags)[-40:]}: exits {status} saying '{message}'", log)

    daemon = Daemon(args.rosettad, *model_flags, "--api_keys_file", str(keys_file),
                    "--api_keys_reload_seconds", "1", "--metrics_listen", "127.0.0.1:0")
    try:
        if not check(daemon.wait_serving(180), "rosettad with API keys serves",
                     "".join(daemon.log)):
            return
        log = "".join(daemon.log)
        check("API keys: 2 from" in log and "warning: API keys without TLS" in log,
              "its log counts the keys and warns that they travel in plain text", log)
        at = ["--address", daemon.address]
        key_file = temporary / "client-key"
        key_file.write_text(f"{first}\n")
        without = {k: v for k, v in os.environ.items() if k != "ROSETTA_API_KEY"}
        status, out, err = run([args.client, "translate", *at, KNOWN_INPUT], env=without)
        check(status == 1 and "UNAUTHENTICATED" in err and "authorization: Bearer KEY" in err,
              "rosetta translate without a key: UNAUTHENTICATED saying what to send",
              f"{status} {out!r} {err}")
        status, out, err = run([args.client, "translate", *at, KNOWN_INPUT],
                               env=dict(without, ROSETTA_API_KEY="k3-not-a-key-of-this-server"))
        check(status == 1 and "UNAUTHENTICATED" in err and "not valid" in err,
              "rosetta translate with a wrong key: UNAUTHENTICATED", f"{status} {out!r} {err}")
        status, out, err = run([args.client, "translate", *at, "--api_key_file", str(key_file),
                                KNOWN_INPUT], env=without)
        check(status == 0 and out.strip() == KNOWN_OUTPUT, "rosetta translate --api_key_file",
              f"{status} {out!r} {err}")
        with_second = dict(without, ROSETTA_API_KEY=second)
        status, out, err = run([args.client, "models", *at], env=with_second)
        check(status == 0 and "aren" in out, "rosetta models with the second key in ROSETTA_API_KEY",
              f"{status} {out!r} {err}")
        status, out, err = run([args.client, "health", *at], env=without)
        check(status == 0 and out.strip() == "SERVING", "rosetta health needs no key",
              f"{status} {out!r} {err}")
        status, out, err = run([args.client, "health", *at, "--tls"], env=without)
        check(status == 1 and "does not seem to use TLS" in err,
              "rosetta health --tls at a plaintext server: a hint", f"{status} {out!r} {err}")
        status, out, err = run(python_client + [*at, KNOWN_INPUT], env=without)
        check(status == 1 and "UNAUTHENTICATED" in err,
              "rosetta_client.py without a key: UNAUTHENTICATED", f"{status} {out!r} {err}")
        status, out, err = run(python_client + [*at, KNOWN_INPUT], env=with_second)
        check(status == 0 and out.strip() == KNOWN_OUTPUT,
              "rosetta_client.py with ROSETTA_API_KEY translates", f"{status} {out!r} {err}")
        # A key gRPC metadata cannot carry: a usage error, not a crash, and the key not shown.
        bad_key = "k1-\u00e9-0123456789abcdef"
        for name, command in [("rosetta", [args.client, "models", *at]),
                              ("rosetta-loadgen", [args.loadgen, *at, "--inputs", "/dev/null"]),
                              ("rosetta_client.py", python_client + [*at, KNOWN_INPUT])]:
            status, out, err = run(command, env=dict(without, ROSETTA_API_KEY=bad_key))
            check(status in (1, 2) and "printable ASCII" in err and bad_key not in err + out,
                  f"{name} with a non-ASCII key in ROSETTA_API_KEY: an error naming the variable",
                  f"{status} {out!r} {err}")
        # Two authorization entries: refused, whichever comes first.
        import grpc  # noqa: E402 (python3-grpcio, as the Python client)
        import rosetta_client  # noqa: E402
        pb2, pb2_grpc, _, _ = rosetta_client.load_stubs(stubs)
        with grpc.insecure_channel(daemon.address) as channel:
            try:
                pb2_grpc.RosettaStub(channel).ListModels(
                    pb2.ListModelsRequest(), timeout=30,
                    metadata=[("authorization", f"Bearer {first}"),
                              ("authorization", f"Bearer {second}")])
                code, details = "OK", ""
            except grpc.RpcError as error:
                code, details = error.code().name, error.details()
        check(code == "UNAUTHENTICATED" and "not several" in details,
              "two authorization entries: UNAUTHENTICATED", f"{code} {details}")

        inputs = temporary / "inputs.txt"
        inputs.write_text(KNOWN_INPUT + "\n", encoding="utf-8")
        status, out, err = run([args.loadgen, *at, "--inputs", str(inputs), "--tokens",
                                "--concurrency", "4", "--requests", "16", "--json",
                                "--api_key_file", str(key_file)], env=without)
        try:
            errors = json.loads(out)["errors"]
        except (ValueError, KeyError):
            errors = None
        check(status == 0 and errors == {},
              "rosetta-loadgen --api_key_file: 16 requests, no errors", f"{status} {out} {err}")

        # Keys rotated while serving: the first revoked, a third added.
        third = "k3-the-third-key-0000"
        replacement = temporary / "keys.new"
        replacement.write_text(f"{second}\n{third}\n")
        os.replace(replacement, keys_file)
        with_third = dict(without, ROSETTA_API_KEY=third)
        check(wait_until(lambda: run([args.client, "models", *at], env=with_third)[0] == 0, 30),
              "a key added to the file is accepted without a restart", "".join(daemon.log[-5:]))
        status, out, err = run([args.client, "models", *at, "--api_key_file", str(key_file)],
                               env=without)
        check(status == 1 and "not valid" in err, "a key removed from the file is refused",
              f"{status} {out!r} {err}")
        check(any("API keys: 2 keys from" in line and "(2 before)" in line for line in daemon.log),
              "the key rotation is logged", "".join(daemon.log[-5:]))
        metrics_url = re.search(r"metrics on (http://\S+/metrics)", "".join(daemon.log))
        values = scrape(metrics_url.group(1) if metrics_url else None)
        check(values.get("rosetta_api_keys") == 2
              and values.get('rosetta_api_keys_updates_total{result="accepted"}') == 1
              and values.get("rosetta_api_keys_file_refused") == 0,
              "/metrics: 2 keys in use, one update accepted, the file not refused", str(values))
    finally:
        status = daemon.stop()
        check(status == 0, "rosettad with API keys exits 0 on SIGTERM", "".join(daemon.log[-10:]))


if __name__ == "__main__":
    sys.exit(main())
