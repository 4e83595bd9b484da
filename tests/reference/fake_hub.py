#!/usr/bin/python3
"""A local stand-in for the Hugging Face Hub's file endpoints, for tests (loopback only).

Serves the repositories found under --root (<root>/<org>/<name>/...) in the Hub's URL layout:
  HEAD/GET /<org>/<name>/resolve/<revision>/<file>
with the headers huggingface_hub reads: X-Repo-Commit, ETag (git blob sha1 for small files),
and for large ("LFS") files a 302 redirect to /lfs/<sha256> with X-Linked-Etag (the sha256) and
X-Linked-Size. Missing files answer 404 with X-Error-Code EntryNotFound, unknown repositories 401
RepositoryNotFound, unknown revisions 404 RevisionNotFound. Range requests are honoured.

Test controls: --token (required bearer token), --interrupt-once FILE (the first download of FILE
stops halfway and drops the connection), --corrupt FILE (serves FILE with one byte changed),
--log PATH (one line per request: method, path, range). Prints "port <n>" when ready.
"""

import argparse
import hashlib
import http.server
import os
import sys
import threading
from pathlib import Path


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    args = None
    interrupted = set()
    lock = threading.Lock()

    def log_message(self, *unused):
        pass

    def record(self):
        if self.args.log:
            with self.lock, open(self.args.log, "a") as log:
                log.write(f"{self.command} {self.path} {self.headers.get('Range', '-')}\n")

    def answer(self, status, headers=(), body=b"", send_body=True):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.handle_request()

    def do_GET(self):
        self.handle_request()

    def handle_request(self):
        self.record()
        path = self.path.split("?", 1)[0]
        if path.startswith("/lfs/"):
            return self.serve_lfs(path[len("/lfs/"):], self.path.split("file=", 1)[-1])
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self.answer(404, [("X-Error-Code", "EntryNotFound")])
        repo, revision, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo_dir = Path(self.args.root) / repo
        if self.args.token and self.headers.get("Authorization") != f"Bearer {self.args.token}":
            code = [] if self.headers.get("Authorization") else [("X-Error-Code", "RepositoryNotFound")]
            return self.answer(401, code)
        if not repo_dir.is_dir() or ".." in parts:
            return self.answer(401, [("X-Error-Code", "RepositoryNotFound")])
        commit = hashlib.sha1(f"commit:{repo}".encode()).hexdigest()
        if revision not in ("main", commit):
            return self.answer(404, [("X-Error-Code", "RevisionNotFound")])
        target = repo_dir / file
        if not target.is_file():
            return self.answer(404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", commit)])
        data = target.read_bytes()
        headers = [("X-Repo-Commit", commit), ("ETag", f'"{git_blob_sha1(data)}"')]
        if len(data) >= self.args.lfs_min_size:
            sha = hashlib.sha256(data).hexdigest()
            headers += [("X-Linked-Etag", f'"{sha}"'), ("X-Linked-Size", str(len(data))),
                        ("Location", f"http://127.0.0.1:{self.server.server_port}/lfs/{sha}?file={repo}/{file}")]
            return self.answer(302, headers)
        self.serve_bytes(data, headers, file)

    def serve_lfs(self, sha, name):
        file = Path(self.args.root) / name
        if ".." in name or not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            return self.answer(404)
        self.serve_bytes(file.read_bytes(), [("ETag", f'"{sha}"')], name.split("/", 2)[-1])

    def serve_bytes(self, data, headers, file):
        if file == self.args.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        requested = self.headers.get("Range", "")
        if requested.startswith("bytes=") and requested.endswith("-"):
            start = int(requested[len("bytes="):-1])
        if start >= len(data) and len(data) > 0:
            return self.answer(416, headers)
        status = 206 if start > 0 else 200
        body = data[start:]
        headers = headers + [("Content-Length", str(len(body))), ("Accept-Ranges", "bytes")]
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"))
        if self.command == "GET" and file == self.args.interrupt_once:
            with self.lock:
                first = file not in self.interrupted
                self.interrupted.add(file)
            if first:
                self.answer(status, headers, send_body=False)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
        self.answer(status, headers, body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--lfs-min-size", type=int, default=10000)
    parser.add_argument("--interrupt-once", default="")
    parser.add_argument("--corrupt", default="")
    parser.add_argument("--log", default="")
    Hub.args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
