"""Reference systems the benchmark runs the same workloads on: raw Dramatiq and Celery 5.

Both read `BENCH_REDIS_URL` and `BENCH_NAMESPACE` from the environment, because their own
command-line workers import these modules by name.
"""

from __future__ import annotations
