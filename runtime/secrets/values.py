"""What a handler sees of its tenant's secrets, and the scrubbing of their values.

`SecretValues` is `ctx.secrets`: a read-only mapping of the secrets the function declared
(`@function(secrets=[...])`) and nothing else. Its `repr` names the secrets, never their
values, so printing the mapping or an object holding it leaks nothing.

`scrub(text, values)` replaces each value in a text by `[secret:<name>]`, in the forms a
value commonly takes inside a message: as is, as Python's `repr` escapes it, and
percent-encoded (a value put in a URL). The runtime scrubs an attempt's error message
and traceback before recording them, its result before storing it, and every log line
of the invocation's thread (`runtime.logs`). A value transformed otherwise (hashed,
base64-encoded, split) is beyond it: a function should not put a secret in an error.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

#: What a secret's name looks like (`@function(secrets=[...])`, `ferry secrets set`).
SECRET_NAME_PATTERN = "^[a-z][a-z0-9_]{0,63}$"
SECRET_NAME = re.compile(SECRET_NAME_PATTERN.strip("^$"))
SECRET_NAME_RULE = "a letter, then letters, digits or _ (lower case, at most 64 in all)"
#: Values shorter than this are refused when set: scrubbing a two-letter value would
#: mangle every message, and so short a value is no secret.
MIN_VALUE_CHARS = 8


#: What `scrub` replaces, in order: (form of a value, its placeholder).
Replacements = tuple[tuple[str, str], ...]


def placeholder(name: str) -> str:
    return f"[secret:{name}]"


class SecretValues(Mapping[str, str]):
    """The declared secrets of one invocation's tenant, by name (read-only)."""

    def __init__(self, values: Mapping[str, str], declared: tuple[str, ...]) -> None:
        self._values = dict(values)
        self._declared = declared
        #: `replacements(self)`, made on the first line that needs it (every log line of
        #: the attempt scrubs with the same values).
        self._replacements: Replacements | None = None

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            if name in self._declared:
                raise
            raise KeyError(
                f"{name!r} is not among the secrets this function declares "
                f"(@function(secrets=[...]): {', '.join(self._declared) or 'none'})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretValues({sorted(self._values)})"

    __str__ = __repr__


def _forms(value: str) -> set[str]:
    forms = {
        value,
        repr(value)[1:-1],
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
    }
    return {form for form in forms if len(form) >= MIN_VALUE_CHARS}


def replacements(values: Mapping[str, str]) -> Replacements:
    """The forms of `values` to replace, in the order `scrub` replaces them.

    Work it out once to scrub many texts with the same values (`scrub_with`): the forms
    cost more to make than to look for. A `SecretValues` keeps its own.
    """
    if isinstance(values, SecretValues):
        if values._replacements is None:
            values._replacements = _replacements(values)
        return values._replacements
    return _replacements(values)


def _replacements(values: Mapping[str, str]) -> Replacements:
    # Longer values first, so a value holding another is replaced whole.
    return tuple(
        (form, placeholder(name))
        for name, value in sorted(values.items(), key=lambda item: -len(item[1]))
        for form in sorted(_forms(value), key=len, reverse=True)
    )


def scrub_with(text: str, forms: Replacements) -> str:
    """`text` with each form replaced by its placeholder (`replacements`)."""
    for form, name in forms:
        if form in text:
            text = text.replace(form, name)
    return text


def scrub(text: str, values: Mapping[str, str]) -> str:
    """`text` with every value of `values` (in its usual encodings) replaced by its name."""
    return scrub_with(text, replacements(values))


def scrub_json(value: Any, values: Mapping[str, str]) -> Any:
    """A JSON value with `scrub` applied to every string in it (keys included)."""
    if not values:
        return value
    if isinstance(value, str):
        return scrub(value, values)
    if isinstance(value, dict):
        return {scrub(str(k), values): scrub_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_json(v, values) for v in value]
    return value
