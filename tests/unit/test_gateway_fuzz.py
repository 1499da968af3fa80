"""A bounded schemathesis run over /openapi.json, against the app in-process (WSGI).

Positive cases (valid by the document) must be accepted, negative ones (invalid by it) refused
with a 4xx, and every answer must be one the document describes. The examples are drawn from a
fixed seed, so CI runs the same few hundred requests each time (about ten seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from gateway.app import create_app
from runtime.app import Runtime
from runtime.store.tenants import parse_scopes
from tests.conftest import prepare
from tests.fuzz_report import FuzzRun, record
from tests.fuzzing import can_be_invalid, fixed_settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
EXAMPLES_PER_OPERATION = 10


def checks_for(path: str, case: schemathesis.Case) -> list[Any]:
    """The checks that hold for this case; two rules the document cannot state are left out.

    - Invoking: a function's input may have rules beyond its JSON schema (`usage_report`'s
      since < until), and `delay` with `at` is a 400 that no parameter schema can express;
      both are in the document's words, not its schemas.
    - A function's own body: pydantic validates inputs in its lax mode (`true` is taken for
      an integer), so a body its schema calls invalid may be accepted.
    - A page cursor is opaque: any string of its alphabet fits the schema, but only one
      the API returned names a page (another is a documented 400).
    """
    excluded = set()
    if "cursor" in (case.query or {}):
        excluded.add(positive_data_acceptance)
    if path.endswith("/invocations"):
        excluded.add(positive_data_acceptance)
        if "{name}" not in path and case.meta and case.meta.is_negative_at(ParameterLocation.BODY):
            excluded.add(negative_data_rejection)
    return [check for check in CHECKS if check not in excluded]


@pytest.fixture
def api(settings_for: Callable[..., Any]) -> Iterator[tuple[Any, dict[str, str]]]:
    # `wait` may be drawn up to its maximum and nothing runs the invocations: keep it short.
    runtime = prepare(Runtime(settings_for("embedded", max_wait_s=0.05)))
    runtime.store.tenants.create("t-fuzz")
    _view, key = runtime.store.tenants.create_key("t-fuzz", parse_scopes("invoke,read,manage"))
    yield create_app(runtime), {"Authorization": f"Bearer {key}"}
    runtime.close()


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], run: FuzzRun) -> None:
    """Send one operation's examples, counted in `run`; raises on the first answer that breaks a check."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @fixed_settings(max_examples=EXAMPLES_PER_OPERATION)
    def send(case: schemathesis.Case) -> None:
        run.cases += 1
        case.call_and_validate(headers=headers, checks=checks_for(operation.path, case))

    try:
        send()
    except Unsatisfiable:
        pass  # nothing of this operation can be invalid (negative mode): nothing to send


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_to_its_published_document(api, mode):
    app, headers = api
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Unknown query parameters are ignored, as HTTP APIs do; the key is always a valid one.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    failures: list[str] = []
    operations = [loaded.ok() for loaded in schema.get_all_operations()]
    run = FuzzRun("wsgi", operations=len(operations))
    document = schema.raw_schema
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not can_be_invalid(
            document, operation.path, operation.method
        ):
            continue
        try:
            fuzz(operation, mode, headers, run)
        except (Exception, BaseExceptionGroup) as ex:  # schemathesis: FailureGroup
            failures.append(f"{operation.method.upper()} {operation.path}:\n{ex}")
    run.failures = len(failures)
    record(run)
    assert not failures, "\n\n".join(failures)
    assert run.cases > 0, "the fuzzer sent nothing"
