"""A fake Hugging Face Hub on 127.0.0.1: just what huggingface_hub's HfApi.create_repo and
create_commit/upload_folder call, for model and dataset repos. Every file is answered as a "regular" upload,
so the client sends it base64-encoded inside the NDJSON commit (no LFS, no xet)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_TYPES = {"models": "model", "datasets": "dataset"}


class FakeHub(BaseHTTPRequestHandler):
    requests: list = []  # (method, path, headers, body), set per server
    repos: dict = {}  # repo id -> {path: bytes}
    repo_types: dict = {}  # repo id -> "model" or "dataset"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("POST", self.path, dict(self.headers), body))
        path = self.path.split("?")[0]
        endpoint = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            self.repos.setdefault(repo_id, {})
            self.repo_types[repo_id] = payload.get("type", "model")
            return self._reply(200, {"url": f"{endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        parts = path.split("/")  # /api/(models|datasets)/<ns>/<name>/(preupload|commit)/<revision>
        if len(parts) == 7 and parts[1] == "api" and parts[2] in REPO_TYPES and parts[5] in ("preupload", "commit"):
            repo_id = f"{parts[3]}/{parts[4]}"
            if self.repo_types.get(repo_id) != REPO_TYPES[parts[2]]:
                return self._reply(404, {"error": "Repository not found"})
            if parts[5] == "preupload":
                files = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in json.loads(body)["files"]
                ]
                return self._reply(200, {"files": files})
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    assert item["value"]["encoding"] == "base64"
                    self.repos[repo_id][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    return self._reply(400, {"error": f"the fake Hub does not take {item['key']}"})
            return self._reply(200, {"commitUrl": f"{endpoint}/{repo_id}/commit/{COMMIT}", "commitOid": COMMIT})
        return self._reply(404, {"error": f"the fake Hub does not serve {self.path}"})


@contextmanager
def serve_fake_hub() -> Iterator[tuple[type[FakeHub], str]]:
    """Starts a fake Hub; yields its handler class (requests, repos) and its endpoint URL."""
    handler = type("Handler", (FakeHub,), {"requests": [], "repos": {}, "repo_types": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
