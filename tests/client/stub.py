"""A loopback HTTP server that answers from a script, for the client's retry tests.

Each request takes the next scripted answer: a status with headers and a JSON body, or
`DROP`, which reads the request and closes the connection without answering. Every
request is recorded, so a test can count them and compare their headers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DROP = "drop"


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    #: The request's JSON body (None without one).
    body: Any = None


class StubServer:
    def __init__(self) -> None:
        self.script: list[Answer | str] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else None
                with stub._lock:
                    stub.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                    answer = stub.script.pop(0) if stub.script else Answer(500, {"status": 500})
                if answer == DROP:
                    self.close_connection = True
                    return
                assert isinstance(answer, Answer)
                data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                content_type = (
                    "application/problem+json" if answer.status >= 400 else "application/json"
                )
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self) -> Iterator[StubServer]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def invocation(status: str = "queued", **fields: Any) -> dict[str, Any]:
    """A body shaped like the API's `invocation`."""
    return {
        "id": "inv-1",
        "function": "echo_time",
        "tenant_id": "dev",
        "status": status,
        "trigger": "http",
        "idempotency_key": "k",
        "request_id": "r",
        "parent_id": None,
        "attempts": 0,
        "max_retries": 3,
        "created_at": "2026-01-01T00:00:00.000Z",
        "scheduled_for": None,
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
        "result": None,
        "error": None,
        **fields,
    }


def problem(status: int, **fields: Any) -> dict[str, Any]:
    return {"type": "urn:ferry:problem:x", "title": "t", "status": status, "detail": "d", **fields}
