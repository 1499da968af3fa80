"""Helpers shared by the fuzz tests (tests/unit/test_gateway_fuzz.py, the live one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def tenant_ids_in(body: Any) -> Iterator[str]:
    """Every `tenant_id` anywhere in a JSON body."""
    if isinstance(body, dict):
        for name, value in body.items():
            if name == "tenant_id" and isinstance(value, str):
                yield value
            else:
                yield from tenant_ids_in(value)
    elif isinstance(body, list):
        for value in body:
            yield from tenant_ids_in(value)


def only_tenant(tenant_id: str | None, label: str) -> Callable[..., None]:
    """A schemathesis check: a successful answer to a tenant's key names no other tenant.

    `tenant_id` None (an operator key) checks nothing.
    """

    def tenant_isolation(ctx: Any, response: Any, case: Any) -> None:
        if tenant_id is None or not 200 <= response.status_code < 300:
            return
        try:
            body = response.json()
        except ValueError:
            return
        others = set(tenant_ids_in(body)) - {tenant_id}
        if others:
            raise AssertionError(f"{label} was answered with tenants {sorted(others)}")

    return tenant_isolation
