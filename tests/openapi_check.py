"""The schema check: every API answer a test gets through Falcon's TestClient must be documented.

Loaded as a pytest plugin by tests/conftest.py. It wraps `TestClient.simulate_request`, so each
answer of a Ferry app is checked against that app's own /openapi.json as it is produced:

- the (path, method) must be an operation of the document, and the status code one of its
  documented answers; anything else (an unknown route, a method the path lacks, a test's own
  route) may only be an error, as a problem+json `Problem`;
- the content type must be the documented one (no body where none is documented), and the
  headers the document marks required must be there;
- the body must validate against the documented schema (JSON Schema draft 2020-12, `$ref`s
  resolved in the document), times in the contract's form (RFC 3339, UTC, milliseconds).

A test whose answer breaks the document fails at that request. The dashboard and /metrics are
not the JSON API and are left out. The number of answers checked is printed at the end.
"""

from __future__ import annotations

import re
import threading
import weakref
from datetime import datetime
from typing import Any

import falcon.testing
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.openapi import OpenApiDocument

#: Paths that are not the JSON API.
EXCLUDED = re.compile(r"/(dashboard|metrics)(/.*)?")
DOCUMENT_URI = "urn:ferry:openapi"
#: The contract's times: RFC 3339 in UTC with milliseconds.
CONTRACT_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

format_checker = jsonschema.FormatChecker()


@format_checker.checks("date-time", raises=ValueError)
def _contract_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(CONTRACT_TIME.fullmatch(value)) and bool(datetime.fromisoformat(value))


class UndocumentedResponse(AssertionError):
    """An answer the published OpenAPI document does not describe."""


def _absolute_refs(node: Any) -> Any:
    """The document with every local `$ref` made absolute, so any part validates on its own."""
    if isinstance(node, dict):
        return {
            key: DOCUMENT_URI + value
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else _absolute_refs(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_absolute_refs(value) for value in node]
    return node


class Published:
    """One app's document, its path templates, and a validator per schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _absolute_refs(document)
        self.registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, Resource(contents=self.document, specification=DRAFT202012)
        )
        # Templates with fewer parameters first: a function's own path wins over {name}.
        templates = sorted(self.document["paths"], key=lambda t: (t.count("{"), t))
        self.routes = [
            (re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(t))), t) for t in templates
        ]
        self.problem = {"$ref": f"{DOCUMENT_URI}#/components/schemas/Problem"}
        self._validators: dict[int, jsonschema.Draft202012Validator] = {}

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = self.registry.resolver().lookup(node["$ref"]).contents
        return node

    def validate(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = self._validators.get(id(schema))
        if validator is None:
            validator = jsonschema.Draft202012Validator(
                schema, registry=self.registry, format_checker=format_checker
            )
            self._validators[id(schema)] = validator
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]


class OpenApiCheck:
    """Checks each answer; counts them."""

    def __init__(self) -> None:
        self.checked = 0
        self._lock = threading.Lock()
        self._published: weakref.WeakKeyDictionary[OpenApiDocument, Published] = (
            weakref.WeakKeyDictionary()
        )

    def published(self, app: Any) -> Published | None:
        """The app's document, read from its /openapi.json resource (no request is made)."""
        router = getattr(app, "_router", None)
        found = router.find("/openapi.json") if router is not None else None
        resource = found[0] if found else None
        if not isinstance(resource, OpenApiDocument):
            return None
        if resource not in self._published:
            self._published[resource] = Published(resource.document)
        return self._published[resource]

    def check(self, app: Any, method: str, path: str, result: falcon.testing.Result) -> None:
        path = path.split("?", 1)[0]
        published = self.published(app)
        if published is None or EXCLUDED.fullmatch(path) or method.upper() == "HEAD":
            return
        template = next((t for pattern, t in published.routes if pattern.fullmatch(path)), None)
        operation = published.document["paths"].get(template, {}).get(method.lower())
        where = f"{method.upper()} {path} answered {result.status_code}"
        if operation is None:
            # Not an operation of the API: only an error may answer, as a problem document.
            if result.status_code < 400:
                raise UndocumentedResponse(f"{where}, but no operation is documented there")
            problem = {"application/problem+json": {"schema": published.problem}}
            self._body(published, where, result, problem)
        else:
            name = operation["operationId"]
            answer = operation["responses"].get(str(result.status_code))
            if answer is None:
                documented = ", ".join(operation["responses"])
                raise UndocumentedResponse(
                    f"{where}, which {name} does not document (it documents {documented}); "
                    f"body: {result.text[:500]}"
                )
            answer = published.resolve(answer)
            self._body(published, f"{where} ({name})", result, answer.get("content"))
            for header, spec in answer.get("headers", {}).items():
                if published.resolve(spec).get("required") and header not in result.headers:
                    raise UndocumentedResponse(f"{where} ({name}) without its {header} header")
        with self._lock:
            self.checked += 1

    def _body(
        self,
        published: Published,
        where: str,
        result: falcon.testing.Result,
        content: dict[str, Any] | None,
    ) -> None:
        content_type = (result.headers.get("content-type") or "").split(";")[0].strip()
        if not content:
            if result.content:
                raise UndocumentedResponse(f"{where} with a body, where none is documented")
            return
        if content_type not in content:
            raise UndocumentedResponse(
                f"{where} as {content_type or 'no content type'}, not {' or '.join(content)}"
            )
        errors = published.validate(content[content_type]["schema"], result.json)
        if errors:
            raise UndocumentedResponse(
                f"{where}, its body does not match /openapi.json:\n  " + "\n  ".join(errors[:10])
            )


openapi_check = OpenApiCheck()


def pytest_configure(config: pytest.Config) -> None:
    simulate = falcon.testing.TestClient.simulate_request

    def checked(self: falcon.testing.TestClient, *args: Any, **kwargs: Any) -> Any:
        result = simulate(self, *args, **kwargs)
        method = args[0] if args else kwargs.get("method", "GET")
        path = args[1] if len(args) > 1 else kwargs.get("path", "/")
        openapi_check.check(self.app, method, path, result)
        return result

    falcon.testing.TestClient.simulate_request = checked  # type: ignore[method-assign]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if openapi_check.checked:
        terminalreporter.write_line(
            f"openapi: {openapi_check.checked} responses checked against /openapi.json"
        )
