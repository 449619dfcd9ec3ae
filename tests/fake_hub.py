"""A fake Hugging Face Hub on 127.0.0.1: what huggingface_hub's HfApi.create_repo and
create_commit/upload_folder call, for model and dataset repos, and what `datasets.load_dataset` reads a
dataset repo with (repo info, file tree, paths-info, file downloads). Every file is answered as a "regular"
upload, so the client sends it base64-encoded inside the NDJSON commit (no LFS, no xet). A repo serves one
commit, `COMMIT` unless `heads` names another (a new revision pushed under the same id), which the revisions
`main` and that commit's hash name; any other revision is not found."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_TYPES = {"models": "model", "datasets": "dataset"}


class FakeHub(BaseHTTPRequestHandler):
    requests: list = []  # (method, path, headers, body) of the POSTs (writes), set per server
    reads: list = []  # (method, path) of the GETs and HEADs, apart: clients also fetch registries of their own
    repos: dict = {}  # repo id -> {path: bytes}
    repo_types: dict = {}  # repo id -> "model" or "dataset"
    heads: dict = {}  # repo id -> the commit it serves, where not COMMIT

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload: dict | list, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _not_found(self, what: str, code: str = "RepoNotFound") -> None:
        # huggingface_hub reads X-Error-Code to raise RepositoryNotFoundError, RevisionNotFoundError, ...
        return self._reply(404, {"error": f"{what} not found"}, {"X-Error-Code": code, "X-Error-Message": what})

    def _files(self, repo_type: str, repo_id: str, revision: str) -> dict[str, bytes] | None:
        """The files of a repo at a revision, or None after answering 404."""
        if self.repo_types.get(repo_id) != repo_type:
            return self._not_found(f"Repository {repo_id}")
        if urllib.parse.unquote(revision) not in ("main", self.head(repo_id)):
            return self._not_found(f"Revision {revision}", "RevisionNotFound")
        return self.repos[repo_id]

    def head(self, repo_id: str) -> str:
        return self.heads.get(repo_id, COMMIT)

    @staticmethod
    def _entry(path: str, content: bytes | None) -> dict:
        if content is None:
            return {"type": "directory", "path": path, "oid": COMMIT}
        return {"type": "file", "path": path, "size": len(content), "oid": hashlib.sha1(content).hexdigest()}

    def _tree(self, files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        entries = {}
        for path, content in files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            if recursive:
                for depth in range(1, len(rest)):
                    entries.setdefault(prefix + "/".join(rest[:depth]), None)
                entries[path] = content
            else:
                entries[prefix + rest[0]] = content if len(rest) == 1 else None
        return [self._entry(path, content) for path, content in sorted(entries.items())]

    def do_GET(self):
        self.reads.append((self.command, self.path))
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        query = urllib.parse.parse_qs(url.query)
        # /api/<type>/<ns>/<name>[/revision/<rev>]: the repo's info, listing its files
        if len(parts) in (5, 7) and parts[1] == "api" and parts[2] in REPO_TYPES and parts[5:6] in ([], ["revision"]):
            repo_id, revision = f"{parts[3]}/{parts[4]}", parts[6] if len(parts) == 7 else "main"
            files = self._files(REPO_TYPES[parts[2]], repo_id, revision)
            if files is not None:
                siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(files.items())]
                info = {"id": repo_id, "sha": self.head(repo_id), "private": False, "disabled": False, "gated": False}
                self._reply(200, {**info, "siblings": siblings, "lastModified": "2024-01-01T00:00:00.000Z"})
            return None
        # /api/<type>/<ns>/<name>/tree/<rev>[/<folder>]: one folder's entries, or all below it (recursive)
        if len(parts) >= 7 and parts[1] == "api" and parts[2] in REPO_TYPES and parts[5] == "tree":
            files = self._files(REPO_TYPES[parts[2]], f"{parts[3]}/{parts[4]}", parts[6])
            if files is not None:
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                self._reply(200, self._tree(files, urllib.parse.unquote("/".join(parts[7:])), recursive))
            return None
        # /datasets/<ns>/<name>/resolve/<rev>/<path> (models without the /datasets prefix): a file download
        offset = 1 if parts[1] == "datasets" else 0
        if len(parts) >= 6 + offset and parts[3 + offset] == "resolve":
            repo_type, repo_id = "dataset" if offset else "model", f"{parts[1 + offset]}/{parts[2 + offset]}"
            files = self._files(repo_type, repo_id, parts[4 + offset])
            if files is None:
                return None
            path = urllib.parse.unquote("/".join(parts[5 + offset :]))
            if path not in files:
                return self._not_found(f"Entry {path}", "EntryNotFound")
            return self._send_file(files[path], self.head(repo_id))
        return self._reply(404, {"error": f"the fake Hub does not serve {self.path}"})

    def do_HEAD(self):
        return self.do_GET()

    def _send_file(self, content: bytes, commit: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

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
        parts = path.split("/")  # /api/(models|datasets)/<ns>/<name>/(preupload|commit|paths-info)/<revision>
        if len(parts) == 7 and parts[1] == "api" and parts[2] in REPO_TYPES and parts[5] == "paths-info":
            files = self._files(REPO_TYPES[parts[2]], f"{parts[3]}/{parts[4]}", parts[6])
            if files is None:
                return None
            asked = urllib.parse.parse_qs(body.decode()).get("paths", [])  # the client posts a form
            folders = [p for p in asked if p not in files and any(f.startswith(f"{p}/") for f in files)]
            return self._reply(200, [self._entry(p, files.get(p)) for p in asked if p in files or p in folders])
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
    """Starts a fake Hub; yields its handler class (requests, reads, repos) and its endpoint URL."""
    handler = type("Handler", (FakeHub,), {"requests": [], "reads": [], "repos": {}, "repo_types": {}, "heads": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
