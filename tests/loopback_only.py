"""Run a module as `__main__` with its network limited to loopback.

    python -m tests.loopback_only runtime.worker --queues default

A test whose processes run functions with inputs it did not choose (the fuzzer's
`send_webhook` URLs) starts them through this, so no request leaves the machine, not
even a DNS lookup: an audit hook refuses name lookups of anything but loopback names
and addresses, and connections to anything but loopback addresses and Unix sockets.
A refused lookup is a `socket.gaierror` and a refused connection a
`ConnectionRefusedError`, as if the network had no such host.
"""

from __future__ import annotations

import ipaddress
import runpy
import socket
import sys
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: Any) -> bool:
    """Whether a host (a name, an address, None for the local host) stays on this machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").lower().rstrip(".")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def refuse_outside_loopback(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo" and not is_loopback(args[0]):
        raise socket.gaierror(socket.EAI_NONAME, f"{args[0]!r}: loopback only in this test")
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise ConnectionRefusedError(f"{address[0]!r}: loopback only in this test")


def main() -> None:
    sys.addaudithook(refuse_outside_loopback)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
