"""Load generators: closed loop (as fast as it answers) and open loop (a steady rate).

The closed loop over HTTP uses `wrk` when it is installed (`apt-get install wrk`): it is
written in C, so on a 2-core machine it leaves most of the CPU to the system under test.
Without it, several Python processes with keep-alive connections do the same, at a
higher CPU cost that the report names.

The open loop sends at fixed intervals and measures each call from the moment it was
*due*, not from when a sender got to it, so a stall shows up as latency of every call
it delayed (no coordinated omission).
"""

from __future__ import annotations

import http.client
import importlib
import json
import multiprocessing
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.infra import BenchError, CpuMeter

Call = Callable[[], None]
#: `module:function` building one `Call` per sender thread from keyword arguments.
CallFactorySpec = tuple[str, dict[str, Any]]

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"

done = function(summary, latency, requests)
  io.write(string.format(
    "WRK_JSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"status_errors\\": %d, " ..
    "\\"connect_errors\\": %d, \\"read_errors\\": %d, \\"write_errors\\": %d, " ..
    "\\"timeouts\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d}}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


#: False: never use wrk (`python -m bench --no-wrk`).
USE_WRK = True


def wrk_path() -> str | None:
    return shutil.which("wrk") if USE_WRK else None


def closed_loop_http(
    url: str, key: str, body: str, *, connections: int, duration_s: float
) -> dict[str, Any]:
    """POST `body` over `connections` keep-alive connections for `duration_s` seconds.

    Returns `requests`, `ok` (2xx), `rate` (2xx per second) and the tool used.
    """
    wrk = wrk_path()
    if wrk is not None:
        return _wrk(wrk, url, key, body, connections, duration_s)
    processes = 2
    per_process = max(1, connections // processes)
    spec: CallFactorySpec = ("bench.loadgen:http_post_call", {"url": url, "key": key, "body": body})
    result = closed_loop_calls(
        spec, processes=processes, threads=per_process, duration_s=duration_s
    )
    result["tool"] = f"python ({processes} processes x {per_process} connections)"
    return result


def closed_loop_http_cpu(
    url: str, key: str, body: str, *, connections: int, duration_s: float, server_pid: int
) -> dict[str, Any]:
    """`closed_loop_http`, with the CPU spent meanwhile: the server's process tree (as
    `gateway`) and the machine's other groups (`CpuMeter`), in all (`cpu_s`) and per
    answered request (`cpu_ms_per_request`)."""
    with CpuMeter({"gateway": [server_pid]}) as cpu:
        result = closed_loop_http(url, key, body, connections=connections, duration_s=duration_s)
    result["cpu_s"] = cpu.used
    result["cpu_ms_per_request"] = cpu.per_item_ms(result["ok"])
    return result


def _wrk(
    wrk: str, url: str, key: str, body: str, connections: int, duration_s: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ferry-bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT.format(body=json.dumps(body), key=key))
        argv = [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(raw[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors"))
    seconds = raw["duration_us"] / 1e6
    ok = raw["requests"] - raw["status_errors"]
    return {
        "tool": f"wrk (2 threads, {connections} connections)",
        "requests": raw["requests"],
        "ok": ok,
        "errors": errors + raw["timeouts"],
        "seconds": seconds,
        "rate": ok / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


# --- calls as plain Python callables ---------------------------------------------------------


def http_post_call(url: str, key: str, body: str) -> Call:
    """A keep-alive POST of `body` to `url`; raises unless the answer is 2xx."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    payload = body.encode()
    box: dict[str, http.client.HTTPConnection] = {}

    def call() -> None:
        conn = box.get("conn")
        if conn is None:
            conn = box["conn"] = http.client.HTTPConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=10
            )
        try:
            conn.request("POST", path, body=payload, headers=headers)
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            box.pop("conn", None)
            raise
        if not 200 <= response.status < 300:
            raise BenchError(f"HTTP {response.status}")

    return call


def build_call(spec: CallFactorySpec) -> Call:
    target, kwargs = spec
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    call: Call = factory(**kwargs)
    return call


def _closed_loop_process(
    spec: CallFactorySpec, threads: int, start_at: float, duration_s: float, out: Any
) -> None:
    counts = [0] * threads
    errors = [0] * threads
    calls = [build_call(spec) for _ in range(threads)]
    end_at = start_at + duration_s

    def run(n: int) -> None:
        call = calls[n]
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < end_at:
            try:
                call()
                counts[n] += 1
            except Exception:
                errors[n] += 1

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(counts), sum(errors)))


def closed_loop_calls(
    spec: CallFactorySpec, *, processes: int, threads: int, duration_s: float
) -> dict[str, Any]:
    """Run `processes x threads` loops of the call for `duration_s`; the completed rate."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    # Every process starts at the same instant, after its imports and connections.
    start_at = time.time() + 3.0
    children = [
        ctx.Process(target=_closed_loop_process, args=(spec, threads, start_at, duration_s, out))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    results = [out.get(timeout=duration_s + 60) for _ in children]
    for child in children:
        child.join(timeout=10)
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return {
        "tool": f"python ({processes} processes x {threads} threads)",
        "requests": ok + errors,
        "ok": ok,
        "errors": errors,
        "seconds": duration_s,
        "rate": ok / duration_s,
    }


def paced(
    spec: CallFactorySpec, *, rate: float, duration_s: float, senders: int = 8
) -> dict[str, Any]:
    """Open loop: one call every `1/rate` s for `duration_s`; latencies from when each was due."""
    total = int(rate * duration_s)
    due_queue: queue.Queue[float | None] = queue.Queue()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    calls = [build_call(spec) for _ in range(senders)]
    for call in calls:  # open the connections before the clock starts
        try:
            call()
        except Exception as ex:
            raise BenchError(f"a warm-up call failed: {ex}") from ex

    def send(call: Call) -> None:
        while True:
            due = due_queue.get()
            if due is None:
                return
            try:
                call()
                elapsed = time.perf_counter() - due
                with lock:
                    latencies.append(elapsed * 1000)
            except Exception:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in calls]
    for thread in threads:
        thread.start()
    started = time.perf_counter() + 0.05
    for n in range(total):
        due = started + n / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        due_queue.put(due)
    for _ in threads:
        due_queue.put(None)
    for thread in threads:
        thread.join(timeout=60)
    achieved = len(latencies) / max(1e-9, time.perf_counter() - started)
    return {
        "latencies_ms": latencies,
        "errors": errors[0],
        "sent": total,
        "achieved_rate": achieved,
    }
