"""The document's OpenAPI links: what clients and the fuzzer's stateful phase follow."""

from __future__ import annotations

import re
from typing import Any

import pytest
from falcon.testing import TestClient

from gateway.app import create_app
from runtime.app import Runtime
from tests.conftest import prepare

INVOCATION_ACTIONS = {"get_invocation", "cancel_invocation", "retry_invocation"}


@pytest.fixture
def document(settings_for) -> dict[str, Any]:
    runtime = prepare(Runtime(settings_for("embedded")))
    try:
        return TestClient(create_app(runtime)).simulate_get("/openapi.json").json
    finally:
        runtime.close()


def operations(document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        op["operationId"]: (path, op)
        for path, methods in document["paths"].items()
        for op in methods.values()
    }


def links_of(document: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    return {
        name: document["components"]["links"][link["$ref"].rsplit("/", 1)[1]]
        for name, link in answer.get("links", {}).items()
    }


def test_every_invoke_answer_links_to_reading_cancelling_and_retrying_it(document):
    # Given every invoke operation (the generic one and each function's own)
    invokes = [
        op
        for path, op in operations(document).values()
        if path.endswith("/invocations") and "post" in document["paths"][path]
    ]
    assert len(invokes) > 1
    for op in invokes:
        for status in ("200", "202"):
            # Then its answer leads to the invocation's item operations, by the body's id
            links = links_of(document, op["responses"][status])
            assert {link["operationId"] for link in links.values()} == INVOCATION_ACTIONS
            assert all(
                link["parameters"] == {"invocation_id": "$response.body#/id"}
                for link in links.values()
            )


def test_every_link_names_an_operation_and_fills_exactly_its_path_parameters(document):
    by_id = operations(document)
    linked = 0
    for _path, op in by_id.values():
        for answer in op["responses"].values():
            for link in links_of(document, answer).values():
                target_path, _target = by_id[link["operationId"]]
                assert set(link["parameters"]) == set(re.findall(r"\{(\w+)\}", target_path))
                linked += 1
    # cancel -> retry and the schedules' links are there too
    assert links_of(document, by_id["cancel_invocation"][1]["responses"]["200"])
    assert links_of(document, by_id["get_schedule"][1]["responses"]["200"])
    assert linked > 10
