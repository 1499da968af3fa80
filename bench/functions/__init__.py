"""Functions only the benchmark loads (`FERRY_FUNCTIONS_MODULE=functions,bench.functions`)."""

from __future__ import annotations
