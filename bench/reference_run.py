"""The reference rows: the same workloads on raw Dramatiq and on Celery 5, both on Redis.

Neither has a store or a gateway, so "accept" is the producer's enqueue call (closed
loop from `processes x threads` client threads, then its latency at the same steady
rate), and "finished" is the end of the task body (nothing is recorded). The drain is
timed from the first message taken to the last one acknowledged, sampled every 10 ms
from the broker's own keys, so the probes add no work to the tasks.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import random
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

from bench import loadgen
from bench.infra import PYTHON, BenchError, CpuMeter, Proc, Processes, child_env, processes
from bench.plan import Plan
from bench.report import percentile


class System:
    """How to start one reference system's workers and see its queue."""

    name: str
    module_name: str
    ready_text: str

    def __init__(self, redis_url: str, namespace: str) -> None:
        self.redis_url = redis_url
        self.namespace = namespace
        # The apps read these at import, here and in the processes started for them.
        os.environ["BENCH_REDIS_URL"] = redis_url
        os.environ["BENCH_NAMESPACE"] = namespace
        self.module: ModuleType = importlib.import_module(self.module_name)

    def env(self) -> dict[str, str]:
        return child_env(BENCH_REDIS_URL=self.redis_url, BENCH_NAMESPACE=self.namespace)

    def start_workers(self, procs: Processes, plan: Plan) -> list[Proc]:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def send_probe(self, sent: float) -> None:
        self.module.probe.send(sent)

    def send_noop(self) -> None:
        self.module.noop.send()


class RawDramatiq(System):
    name = "dramatiq"
    module_name = "bench.reference.dramatiq_app"
    ready_text = "is ready for action"

    def start_workers(self, procs: Processes, plan: Plan) -> list[Proc]:
        argv = [PYTHON, "-m", "dramatiq", self.module_name, "--processes", str(plan.processes)]
        argv += ["--threads", str(plan.threads), "--queues", "bench"]
        return [procs.start("dramatiq", argv, self.env())]

    def flush(self) -> None:
        self.module.broker.flush_all()


class Celery(System):
    name = "celery"
    module_name = "bench.reference.celery_app"
    ready_text = "bench: celery worker ready"

    def start_workers(self, procs: Processes, plan: Plan) -> list[Proc]:
        started = []
        for n in range(plan.processes):
            argv = [PYTHON, "-m", "celery", "-A", self.module_name, "worker", "--pool", "threads"]
            argv += ["--concurrency", str(plan.threads), "-Q", "bench", "-n", f"bench{n}@%h"]
            argv += ["--loglevel", "WARNING"]
            started.append(procs.start(f"celery-{n + 1}", argv, self.env()))
        return started

    def flush(self) -> None:
        prefix = self.module.PREFIX
        client = redis.Redis.from_url(self.redis_url)
        # The queue's binding keys stay: without them kombu drops what is published.
        client.delete(f"{prefix}bench", f"{prefix}unacked", f"{prefix}unacked_index")
        client.close()

    def send_probe(self, sent: float) -> None:
        self.module.probe.delay(sent)

    def send_noop(self) -> None:
        self.module.noop.delay()


def _fill(system: System, count: int, threads: int = 4) -> float:
    def send(n: int) -> None:
        for _ in range(n):
            system.send_noop()

    share = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, share))
    return count / (time.perf_counter() - started)


def _drain(system: System, workers: list[Proc], count: int, timeout_s: float) -> dict[str, Any]:
    pending = system.module.pending
    deadline = time.monotonic() + timeout_s
    first_at: float | None = None
    first_pending = count
    while True:
        now = time.perf_counter()
        left = pending()
        if first_at is None and left < count:
            first_at, first_pending = now, left
        if left == 0:
            break
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            raise BenchError(f"{system.name}: {left} of {count} messages left after the drain")
        time.sleep(0.01)
    if first_at is None:
        raise BenchError(f"{system.name}: the drain ended before it was seen to start")
    # Messages done between the first and the last sample, over the time between them.
    window = now - first_at
    return {"window_s": window, "rate": first_pending / window, "first_pending": first_pending}


def _idle(system: System, plan: Plan) -> dict[str, Any]:
    client = redis.Redis.from_url(system.redis_url)
    key = system.module.PROBE_KEY
    client.delete(key)
    start, finish = [], []
    for _ in range(plan.idle_samples):
        time.sleep(random.uniform(*plan.idle_pause_s))
        system.send_probe(time.time())
        got = client.blpop([key], timeout=15)
        if got is None:
            raise BenchError(f"{system.name}: a probe did not run within 15 s")
        sent, started, finished = json.loads(got[1])
        start.append((started - sent) * 1000)
        finish.append((finished - sent) * 1000)
    client.close()
    return {"start_ms": start, "finish_ms": finish}


def run(system: System, plan: Plan, log_dir: Path, say: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    spec: loadgen.CallFactorySpec = (f"{system.module_name}:send_call", {})
    say(f"{system.name}: closed-loop enqueue for {plan.accept_s:.0f}s")
    threads = max(1, plan.connections // plan.processes)
    with CpuMeter({}) as cpu:
        accept = loadgen.closed_loop_calls(
            spec, processes=plan.processes, threads=threads, duration_s=plan.accept_s
        )
    accept["cpu_s"] = cpu.used
    figures["accept_rate"] = accept["rate"]
    details["accept"] = accept
    system.flush()
    say(f"{system.name}: enqueue at {plan.rate}/s for {plan.paced_s:.0f}s")
    paced = loadgen.paced(spec, rate=plan.rate, duration_s=plan.paced_s)
    figures["accept_p50_ms"] = percentile(paced["latencies_ms"], 50)
    figures["accept_p99_ms"] = percentile(paced["latencies_ms"], 99)
    details["paced"] = {k: v for k, v in paced.items() if k != "latencies_ms"}
    system.flush()
    say(f"{system.name}: enqueueing {plan.invocations} no-ops")
    details["fill_rate"] = _fill(system, plan.invocations)
    with processes(log_dir) as procs:
        say(f"{system.name}: draining with {plan.processes} x {plan.threads} workers")
        workers = system.start_workers(procs, plan)
        with CpuMeter({"workers": [w.pid for w in workers]}) as cpu:
            drain = _drain(system, workers, plan.invocations, plan.drain_timeout_s)
        drain["cpu_s"] = cpu.used
        drain["cpu_ms_per_message"] = cpu.per_item_ms(plan.invocations)
        figures["e2e_rate"] = drain["rate"]
        figures["e2e_cpu_ms"] = drain["cpu_ms_per_message"].get("workers")
        details["drain"] = drain
        for worker in workers:
            worker.wait_for_output(system.ready_text)
        say(f"{system.name}: {plan.idle_samples} single messages on idle workers")
        time.sleep(2)
        idle = _idle(system, plan)
        figures["idle_start_p50_ms"] = percentile(idle["start_ms"], 50)
        figures["idle_start_p99_ms"] = percentile(idle["start_ms"], 99)
        figures["idle_finish_p50_ms"] = percentile(idle["finish_ms"], 50)
        figures["idle_finish_p99_ms"] = percentile(idle["finish_ms"], 99)
        details["idle"] = {"samples": len(idle["start_ms"]), "start_max_ms": max(idle["start_ms"])}
    return {"figures": figures, "details": details}
