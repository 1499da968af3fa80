"""Do nothing and succeed: the benchmark's unit of work, so only Ferry's own cost is measured."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import Context, function


class Input(BaseModel):
    pass


@function(queue="default", max_retries=0, timeout=30)
def bench_noop(ctx: Context, payload: Input) -> None:
    return None
