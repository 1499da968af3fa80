"""What a function declares about its own limits (`@function(concurrency=..., ...)`).

    @function(concurrency=5, max_waiting=1000, concurrency_key="customer_id")
    def sync_customer(ctx, payload: Input) -> Output: ...

- `concurrency`: at most this many of the function's invocations run at once per tenant;
- `max_waiting`: at most this many of them wait per tenant; over it, accepts get 429;
- `concurrency_key`: a top-level field of the Input; invocations with the same value of
  it run at most `concurrency_per_key` at once (default 1: "one sync per customer at a
  time"). An input without the field (or with null) is not limited by key.

Each holds in addition to the tenant's own limits: a function cannot raise them. None
(the default) sets no limit of the function's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pydantic

from runtime.errors import FunctionDefinitionError

#: The longest concurrency key stored as it is; a longer one is stored as its hash.
MAX_KEY_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class FunctionLimits:
    """A function's own concurrency and waiting limits; None: none of its own."""

    concurrency: int | None = None
    max_waiting: int | None = None
    #: The Input field whose value is the concurrency key.
    concurrency_key: str | None = None
    #: Invocations with one key value running at once (set when `concurrency_key` is).
    concurrency_per_key: int | None = None

    @classmethod
    def declared(
        cls,
        where: str,
        input_model: type[pydantic.BaseModel],
        *,
        concurrency: int | None,
        max_waiting: int | None,
        concurrency_key: str | None,
        concurrency_per_key: int | None,
    ) -> FunctionLimits:
        """Check what `@function` was given (`FunctionDefinitionError` saying what is wrong)."""
        for label, value in (
            ("concurrency", concurrency),
            ("max_waiting", max_waiting),
            ("concurrency_per_key", concurrency_per_key),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise FunctionDefinitionError(f"{where}: {label} must be a whole number")
            if value is not None and value < 1:
                raise FunctionDefinitionError(f"{where}: {label} must be at least 1")
        if concurrency_key is None:
            if concurrency_per_key is not None:
                raise FunctionDefinitionError(
                    f"{where}: concurrency_per_key needs concurrency_key (the Input field)"
                )
        elif concurrency_key not in input_model.model_fields:
            raise FunctionDefinitionError(
                f"{where}: concurrency_key {concurrency_key!r} is not a field of "
                f"{input_model.__name__}"
            )
        elif concurrency_per_key is None:
            concurrency_per_key = 1
        return cls(concurrency, max_waiting, concurrency_key, concurrency_per_key)

    def key_of(self, data: Mapping[str, Any]) -> str | None:
        """The concurrency key of a validated input (its JSON form), or None.

        A string is the key as it is; another value is its compact JSON. A key longer than
        `MAX_KEY_LENGTH` is stored as `sha256:<hex>` of itself.
        """
        if self.concurrency_key is None:
            return None
        value = data.get(self.concurrency_key)
        if value is None:
            return None
        key = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(key) > MAX_KEY_LENGTH:
            return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return key

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
