"""Helpers shared by the fuzz tests (tests/unit/test_gateway_fuzz.py, the live one)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings

#: A parameter schema nothing sent can break: headers and path segments are strings anyway.
_ANY_STRING = {"type": "string"}


def fixed_settings(**more: Any) -> settings:
    """Hypothesis settings for a bounded run: the same examples every time, no deadline."""
    return settings(
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        **more,
    )


def can_be_invalid(document: dict[str, Any], path: str, method: str) -> bool:
    """Whether a request to this operation can break its document (a negative case exists).

    It can when it has a body, a query parameter or a parameter whose schema constrains
    it. Plain strings in the path or headers cannot be invalid: Hypothesis would search a
    long while for a negative case before giving up (`Unsatisfiable`), once per key.
    """
    operation = document["paths"][path][method.lower()]
    if "requestBody" in operation:
        return True
    for parameter in operation.get("parameters", []):
        while "$ref" in parameter:
            kind, name = parameter["$ref"].split("/")[-2:]
            parameter = document["components"][kind][name]
        if parameter["in"] == "query" or parameter.get("schema", {}) != _ANY_STRING:
            return True
    return False
