"""`ferry dev`'s HTTP server holds a burst of connections until its threads accept them."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from runtime import devserver

BURST = 200


def hello(_environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@contextlib.contextmanager
def connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            # A connection the listen queue cannot hold is not completed: its SYN is
            # dropped, and the connect times out.
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_a_burst_of_connections_waits_in_the_listen_queue_and_is_answered():
    server = devserver._make_server("127.0.0.1", 0, hello)
    try:
        # Given the server is not accepting yet, when 200 clients connect at once,
        # then the kernel completes every connection (none is dropped or reset)
        with connections(server.server_port, BURST) as opened:
            for sock in opened:
                sock.sendall(b"GET / HTTP/1.0\r\nHost: dev\r\n\r\n")
            # And once it serves, each of them gets its answer
            http = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
            http.start()
            try:
                answers = [sock.makefile("rb").readline() for sock in opened]
            finally:
                server.shutdown()
                http.join(timeout=10)
        assert [a.split(b" ")[1] for a in answers] == [b"200"] * BURST
    finally:
        server.server_close()
