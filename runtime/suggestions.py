""" "Did you mean": the closest known names to a name that was not found."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_names(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Up to `n` of `known` that look like `name`, closest first (difflib's ratio)."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'x'?` (or `'x' or 'y'`) to end a not-found message; "" if none is close."""
    close = close_names(name, known)
    if not close:
        return ""
    return f"; did you mean {' or '.join(repr(c) for c in close)}?"
