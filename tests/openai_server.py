"""A real HTTP server on 127.0.0.1 speaking enough of the OpenAI API for the augment tests and benchmark.

It answers /v1/models, /v1/chat/completions, /v1/files and /v1/batches. Its "LLM" rewrites by reversing
every word longer than three letters, so outputs differ from their sources but keep their decision; it writes
the text fields the request's JSON schema names (all of question, context and long answer without one).
Faults are scripted per source question: `server.faults["some question text"] = ["429", "500", "ok"]`
makes the requests whose input question contains that text meet those answers in turn.

A request with `logprobs: true` gets each token's log-probability and `top_logprobs` (the answer is cut into
words, punctuation and spaces): 0 everywhere but where the decision value starts, where the labels get
`decision_probs` (uniform over a label set it does not name), or HTTP 400 with `logprobs_supported` off."""

from __future__ import annotations

import base64
import email.parser
import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTIONS = (
    "ok", "429", "500", "slow", "drop", "malformed", "fenced", "wrong_decision", "copy", "keep_context", "flip",
    "html", "bad_json", "408", "409", "404", "shorten",
)  # fmt: skip
STATUS_MESSAGES = {"408": "request timeout", "409": "conflict: the resource is busy", "404": "no such model"}
FLIP = {"yes": "no", "no": "yes", "maybe": "yes"}
TEXT_FIELDS = ("question", "context", "long_answer")
# Tokens: a word with the space and the opening quote before it (` "yes`), a punctuation mark, or spaces.
TOKEN = re.compile(r' ?"?\w+| ?[^\w\s]|\s+')
DECISION_KEY = '"final_decision": "'


def mangle(text: str) -> str:
    """New words, same numbers (a rewrite keeps every figure of its source)."""
    return " ".join(w[::-1] if len(w) > 3 and not any(c.isdigit() for c in w) else w for w in text.split())


def request_key(body: dict) -> str:
    """Identifies one logical request: its messages and sampling seed."""
    payload = {"messages": body.get("messages"), "seed": body.get("seed"), "model": body.get("model")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class FakeOpenAI:
    def __init__(
        self,
        api_key: str = "sk-test-secret-0123456789",
        latency: float = 0.0,
        retry_after: str = "0.1",
        slow_seconds: float = 2.0,
        json_mode_supported: bool = True,
        json_schema_supported: bool = True,
        batch_polls: int = 2,
        basic_auth: tuple[str, str] | None = None,
    ):
        self.api_key = api_key
        # A server behind a proxy that takes user:password (from a base URL http://user:password@host/v1).
        self.basic_auth = f"Basic {base64.b64encode(':'.join(basic_auth).encode()).decode()}" if basic_auth else None
        self.latency = latency
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.json_mode_supported = json_mode_supported
        self.json_schema_supported = json_schema_supported
        self.format_refusal_status = 400  # how a refused response_format is answered (422, 500: other servers)
        self.logprobs_supported = True
        self.decision_probs = {"yes": 0.7, "no": 0.2, "maybe": 0.1}  # where the decision starts
        self.response_formats: list[dict | None] = []  # the response_format of every chat request
        self.batch_polls = batch_polls
        self.faults: dict[str, list[str]] = {}
        self.counts: Counter = Counter()  # chat requests received, per request_key
        self.completed: Counter = Counter()  # chat requests answered with 200, per request_key
        self.times: list[float] = []  # arrival time of every chat request
        self.log: list[dict] = []  # (time, action, key) of every chat request
        self.paths: Counter = Counter()
        self.auth_seen: list[str] = []
        self.queries: list[str] = []  # the query string of every request
        self.bodies: list[dict] = []  # every chat request body, in arrival order
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_creates = 0
        self.decisions: dict[str, str] = {}  # generated question -> decision, for the verifier
        self.gate: threading.Event | None = None  # when set to an Event, chat answers wait until it is set
        self.flipped: set[str] = set()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that hang up (kill, timeout) are expected
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- the "model" ---------------------------------------------------------------------------------

    def _next_action(self, question: str) -> str:
        with self.lock:
            for needle, actions in self.faults.items():
                if needle in question and actions:
                    return actions.pop(0)
        return "ok"

    @staticmethod
    def schema_of(body: dict) -> dict | None:
        """The JSON schema a chat request asks its answer to follow, in any of the response_format forms."""
        response_format = body.get("response_format") or {}
        return (response_format.get("json_schema") or {}).get("schema") or response_format.get("schema")

    def answer(self, body: dict) -> tuple[str, str]:
        """(action, content) for a chat request body."""
        user = body["messages"][-1]["content"]
        source = json.loads(user[user.index("Input:") + len("Input:") :])
        # A v2 new-pair prompt shows no question: the abstract's first words stand in for it.
        question = source.get("question") or " ".join(source["context"].split()[:8])
        schema = self.schema_of(body)
        if "final_decision" not in source and "question" in source:  # a verifier request
            decision = self.decisions.get(question, "maybe")
            if question in self.flipped:
                decision = FLIP[decision]
            return "ok", json.dumps({"final_decision": decision})
        action = self._next_action(question)
        new = user.startswith("Write ")
        fields = [k for k in TEXT_FIELDS if schema is None or k in schema["properties"]]
        out = {k: mangle(source.get(k, question)) for k in fields}
        if new:
            out["question"] = "Regarding this study, " + mangle(question) + " in other patients?"
        letters = "".join(c for c in str(body.get("model")) if c.isalpha())  # no figure the source lacks
        # Two models never write the same words; a question stays a question.
        out["question"] = out["question"].rstrip("?") + f" ({letters})?"
        if body.get("seed"):  # another sample: other words
            out["question"] = f"Version {body['seed']}: {out['question']}"
        # A new pair from a prompt that hides the decision: the first label the schema allows (PubMedQA's yes).
        labels = schema["properties"]["final_decision"]["enum"] if schema else ["yes"]
        out["final_decision"] = source.get("final_decision", labels[0])
        if action == "wrong_decision":
            out["final_decision"] = FLIP[out["final_decision"]]
        if action == "keep_context":  # a rewrite that keeps the abstract word for word
            out["context"] = source["context"]
        if action == "shorten":  # a rewrite that keeps the passage's first sentence only
            out["context"] = mangle(source["context"].split(". ")[0]) + "."
        if action == "copy":
            out = {k: source.get(k, question) for k in fields}
            out["final_decision"] = source.get("final_decision", labels[0])
        with self.lock:
            self.decisions[out["question"]] = out["final_decision"]
            if action == "flip":
                self.flipped.add(out["question"])
        content = json.dumps(out)
        if action == "malformed":
            content = content[: len(content) // 2]  # cut off: no JSON object can be read
        if action == "fenced":
            content = f"Here is the JSON you asked for:\n```json\n{content}\n```"
        return action, content

    def token_logprobs(self, body: dict, content: str) -> list[dict]:
        """OpenAI's `logprobs.content` for `content`: certain tokens, but for the decision value's first."""
        tokens = TOKEN.findall(content)
        assert "".join(tokens) == content
        schema = self.schema_of(body)
        labels = schema["properties"]["final_decision"]["enum"] if schema else list(self.decision_probs)
        probs = {label: self.decision_probs[label] for label in labels if label in self.decision_probs}
        probs = probs or dict.fromkeys(labels, 1 / len(labels))
        start = content.rfind(DECISION_KEY) + len(DECISION_KEY) if DECISION_KEY in content else -1
        out, offset = [], 0
        for token in tokens:
            entry = {"token": token, "logprob": 0.0, "bytes": list(token.encode()), "top_logprobs": []}
            if offset <= start < offset + len(token):
                lead, value = token[: start - offset], token[start - offset :]
                alternatives = {lead + label: math.log(p) for label, p in probs.items()}
                entry["logprob"] = alternatives.get(token, math.log(0.01))
                ranked = sorted(alternatives.items(), key=lambda a: -a[1])
                entry["top_logprobs"] = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked]
                assert value  # the value starts in this token
            else:
                entry["top_logprobs"] = [{"token": token, "logprob": 0.0, "bytes": list(token.encode())}]
            out.append(entry)
            offset += len(token)
        return out

    def completion(self, body: dict, content: str) -> dict:
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": self.token_logprobs(body, content)}
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": len(content) // 4,
                "total_tokens": (prompt_chars + len(content)) // 4,
            },
        }

    # --- HTTP ----------------------------------------------------------------------------------------

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(
                self,
                status: int,
                payload,
                headers: dict | None = None,
                raw: bytes | None = None,
                content_type: str = "application/json",
            ) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                self._send(status, {"error": {"message": message, "type": "test", "code": status}}, headers)

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "")
                server.auth_seen.append(given)
                server.queries.append(self.path.partition("?")[2])
                if given not in (f"Bearer {server.api_key}", server.basic_auth):
                    # Echo the key back, worse than OpenAI does, to prove the client never repeats it.
                    self._error(401, f"Incorrect API key provided: {given.removeprefix('Bearer ')}")
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.paths[f"GET {self.path.split('?')[0]}"] += 1
                if not self._authorized():
                    return
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts == ["v1", "models"]:
                    return self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                if parts[:2] == ["v1", "batches"] and len(parts) == 3:
                    return self._send(200, server.poll_batch(parts[2]))
                if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
                    return self._send(200, None, raw=server.files[parts[2]])
                self._error(404, "not found")

            def do_POST(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                server.paths[f"POST {path}"] += 1
                raw = self._body()
                if not self._authorized():
                    return
                if path == "/v1/chat/completions":
                    return self._chat(json.loads(raw))
                if path == "/v1/files":
                    return self._send(200, server.store_file(self.headers["Content-Type"], raw))
                if path == "/v1/batches":
                    return self._send(200, server.create_batch(json.loads(raw)))
                self._error(404, "not found")

            def _chat(self, body: dict) -> None:
                key = request_key(body)
                server.bodies.append(body)
                with server.lock:
                    server.counts[key] += 1
                    server.times.append(time.monotonic())
                response_format = body.get("response_format")
                server.response_formats.append(response_format)
                if response_format is not None and not server.json_mode_supported:
                    return self._error(400, "response_format is not supported by this model")
                if (response_format or {}).get("type") == "json_schema" and not server.json_schema_supported:
                    status = server.format_refusal_status
                    return self._error(status, "response_format type json_schema is not supported")
                if body.get("logprobs") and not server.logprobs_supported:
                    return self._error(400, "logprobs is not supported with this model")
                if server.gate is not None:
                    server.gate.wait(timeout=120)
                action, content = server.answer(body)
                server.log.append({"time": time.monotonic(), "action": action, "key": key})
                if server.latency:
                    time.sleep(server.latency)
                if action == "429":
                    return self._error(429, "rate limited", {"Retry-After": server.retry_after})
                if action == "500":
                    return self._error(500, "internal error")
                if action in STATUS_MESSAGES:
                    return self._error(int(action), STATUS_MESSAGES[action])
                if action == "slow":
                    time.sleep(server.slow_seconds)
                if action == "html":  # a proxy's error page, served with status 200
                    page = b"<html><body>Gateway busy</body></html>"
                    return self._send(200, None, raw=page, content_type="text/html")
                if action == "bad_json":  # a body cut off in transit
                    return self._send(200, None, raw=b'{"id": "chatcmpl-1", "choices": [')
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                with server.lock:
                    server.completed[key] += 1
                self._send(200, server.completion(body, content))

        return Handler

    # --- files and batches ---------------------------------------------------------------------------

    def store_file(self, content_type: str, raw: bytes) -> dict:
        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        data = next(
            p.get_payload(decode=True)
            for p in message.get_payload()
            if p.get_param("name", header="content-disposition") == "file"
        )
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": 0,
            "filename": "x",
            "purpose": "batch",
            "status": "processed",
        }

    def create_batch(self, body: dict) -> dict:
        self.batch_creates += 1
        batch_id = f"batch-{self.batch_creates}"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"], "status": "in_progress", "created_at": int(time.time()),
            "polls": 0,
        }  # fmt: skip
        return self._public(self.batches[batch_id])

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "polls"}

    def poll_batch(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        batch["polls"] += 1
        if batch["status"] == "in_progress" and batch["polls"] >= self.batch_polls:
            lines = []
            for line in self.files[batch["input_file_id"]].decode().splitlines():
                item = json.loads(line)
                key = request_key(item["body"])
                self.counts[key] += 1
                _, content = self.answer(item["body"])
                response = {"status_code": 200, "request_id": "r", "body": self.completion(item["body"], content)}
                lines.append(
                    json.dumps({"id": "x", "custom_id": item["custom_id"], "response": response, "error": None})
                )
            output_id = f"file-{len(self.files)}"
            self.files[output_id] = ("\n".join(lines) + "\n").encode()
            batch.update(status="completed", output_file_id=output_id)
        return self._public(batch)
