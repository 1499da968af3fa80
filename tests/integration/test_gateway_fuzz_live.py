"""A bounded schemathesis run against a live gateway: gunicorn, a worker, PostgreSQL, Redis.

The gateway runs with the production gunicorn configuration and the production functions;
a worker runs what it accepts, with its network limited to loopback (tests/loopback_only.py:
the fuzzer's `send_webhook` URLs go nowhere). Two tenants, keys of every scope and an
operator key. Every operation of /openapi.json is fuzzed, whatever routes it has:

1. stateless: each operation with each key, positive cases, and negative ones wherever
   the operation can be invalid (tests/fuzzing.py: `can_be_invalid`);
2. stateful: scenarios chained through the document's links (invoke -> read, cancel,
   retry; schedules -> read, trigger, pause, resume, delete) with tenant A's full key and
   with the operator key acting for tenant A (schemathesis adds links it infers).

Every answer must be documented (status, content type, headers, body) and none a 5xx.
No answer to a tenant's key may name another tenant; afterwards tenant B's key gets 404
for each of tenant A's invocations. The examples come from a fixed seed; the counts are
printed at the end of the run (tests/fuzz_report.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import requests
import schemathesis
import sqlalchemy as sa
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from runtime.settings import Settings
from runtime.store import Store
from runtime.store.tenants import parse_scopes
from tests.fuzz_report import FuzzRun, record
from tests.fuzzing import can_be_invalid, fixed_settings, only_tenant
from tests.integration.conftest import Deployment
from tests.procs import PYTHON, Processes, free_port

pytestmark = pytest.mark.integration

#: Examples per operation, key and generation mode; stateful scenarios and their length.
EXAMPLES = 3
SCENARIOS = 12
STEPS_PER_SCENARIO = 8
TENANT_A, TENANT_B = "fuzz-a", "fuzz-b"
#: Scope sets of tenant keys: each scope alone, and all of them.
TENANT_SCOPES = ("invoke", "read", "manage", "invoke,read,manage")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclasses.dataclass(frozen=True)
class Key:
    """An API key the fuzzer sends: whose (None: an operator's), which scopes."""

    label: str
    tenant_id: str | None
    token: str

    def headers(self, acting_for: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if acting_for is not None:
            headers["X-Tenant-ID"] = acting_for
        return headers


def make_keys(database_url: str) -> list[Key]:
    """Two tenants, a key of each scope set for A, a full key for B, and an operator key."""
    store = Store.from_settings(Settings.from_env(database_url=database_url))
    try:
        keys = []
        for tenant in (TENANT_A, TENANT_B):
            store.tenants.create(tenant)
        for scopes in TENANT_SCOPES:
            _view, token = store.tenants.create_key(TENANT_A, parse_scopes(scopes))
            keys.append(Key(f"{TENANT_A}[{scopes}]", TENANT_A, token))
        _view, token = store.tenants.create_key(TENANT_B, parse_scopes(TENANT_SCOPES[-1]))
        keys.append(Key(f"{TENANT_B}[{TENANT_SCOPES[-1]}]", TENANT_B, token))
        _view, token = store.tenants.create_key(None, parse_scopes("admin"))
        keys.append(Key("operator[admin]", None, token))
        return keys
    finally:
        store.close()


class Fuzzer:
    """Sends cases to the live gateway, counting them and collecting failures."""

    def __init__(self, schema: Any, session: requests.Session) -> None:
        self.schema = schema
        self.session = session
        self.run = FuzzRun("live")
        self.failures: list[str] = []

    def stateless(self, operation: Any, mode: GenerationMode, key: Key) -> None:
        checks = [*CHECKS, only_tenant(key.tenant_id, key.label)]

        @given(case=operation.as_strategy(generation_mode=mode))
        @fixed_settings(max_examples=EXAMPLES)
        def run(case: schemathesis.Case) -> None:
            self.run.cases += 1
            case.call_and_validate(
                session=self.session, headers=key.headers(), checks=checks, timeout=30
            )

        try:
            run()
        except Unsatisfiable:
            pass  # nothing of this operation can be invalid (negative mode): nothing to send
        except (Exception, BaseExceptionGroup) as ex:  # schemathesis: FailureGroup
            self.failures.append(f"{operation.label} with {key.label} ({mode.value}):\n{ex}")

    def stateful(self, key: Key, acting_for: str | None) -> None:
        fuzzer, checks = self, [*CHECKS, only_tenant(key.tenant_id, key.label)]
        base = self.schema.as_state_machine()

        class Machine(base):  # type: ignore[misc, valid-type]
            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                # The key's own X-Tenant-ID wins over a generated one, so that the chain
                # acts in one tenant (a wrong one is fuzzed in the stateless phase).
                return {"session": fuzzer.session, "headers": key.headers(acting_for)}

            def before_call(self, case: schemathesis.Case) -> None:
                if case.headers:
                    case.headers.pop("X-Tenant-ID", None)
                fuzzer.run.stateful_steps += 1

            def validate_response(
                self, response: Any, case: schemathesis.Case, **kwargs: Any
            ) -> None:
                case.validate_response(response, checks=checks, transport_kwargs=kwargs)

        try:
            Machine.run(
                settings=fixed_settings(
                    max_examples=SCENARIOS, stateful_step_count=STEPS_PER_SCENARIO
                )
            )
        except (Exception, BaseExceptionGroup) as ex:  # schemathesis: FailureGroup
            self.failures.append(f"stateful with {key.label}:\n{ex}")


def start_gateway(deployment: Deployment, procs: Processes) -> str:
    """Gunicorn (production config) and a loopback-only worker; the gateway's base URL."""
    # The production functions; `?wait` short, since the fuzzer draws it up to its maximum.
    env = deployment.env(functions_module="functions", max_wait_s=1, log_level="warning")
    port = free_port()
    procs.gunicorn(env, port=port, workers=2, threads=4)
    worker = procs.start(
        "worker",
        [
            PYTHON,
            "-m",
            "tests.loopback_only",
            "runtime.worker",
            "--queues",
            "default,heavy,scheduled",
            "--threads",
            "4",
        ],
        {**env, "FERRY_LOG_LEVEL": "info"},
    )
    worker.wait_for_output('"worker_started"')
    return f"http://127.0.0.1:{port}"


def invocation_owners(database_url: str) -> dict[str, str]:
    store = Store.from_settings(Settings.from_env(database_url=database_url))
    try:
        with store.db.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, tenant_id FROM invocations"))
            return {row.id: row.tenant_id for row in rows}
    finally:
        store.close()


def test_a_live_gateway_keeps_to_its_document_under_fuzzing(
    deployment: Deployment, procs: Processes
) -> None:
    # Given a live gateway and worker, two tenants, keys of every scope and an operator
    base_url = start_gateway(deployment, procs)
    keys = make_keys(deployment.database_url)
    full_a, full_b, operator = keys[3], keys[4], keys[5]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # The key is always one of ours; unknown query parameters are ignored, as HTTP APIs do.
    schema.config.generation.update(allow_extra_parameters=False, with_security_parameters=False)
    operations = [loaded.ok() for loaded in schema.get_all_operations()]
    session = requests.Session()
    fuzzer = Fuzzer(schema, session)
    fuzzer.run.operations = len(operations)

    # When every operation is fuzzed with every key, then chained through the links
    document = session.get(f"{base_url}/openapi.json", timeout=30).json()
    for key in keys:
        for operation in operations:
            fuzzer.stateless(operation, GenerationMode.POSITIVE, key)
            if can_be_invalid(document, operation.path, operation.method):
                fuzzer.stateless(operation, GenerationMode.NEGATIVE, key)
    fuzzer.stateful(full_a, acting_for=None)
    fuzzer.stateful(operator, acting_for=TENANT_A)

    # Then nothing failed, and tenant B's key reaches none of tenant A's invocations
    owners = invocation_owners(deployment.database_url)
    of_a = sorted(i for i, tenant in owners.items() if tenant == TENANT_A)
    for invocation_id in of_a[:25]:
        for method, path in (
            ("GET", f"/v1/invocations/{invocation_id}"),
            ("POST", f"/v1/invocations/{invocation_id}/cancel"),
            ("POST", f"/v1/invocations/{invocation_id}/retry"),
        ):
            answer = session.request(method, base_url + path, headers=full_b.headers(), timeout=30)
            if answer.status_code != 404:
                fuzzer.failures.append(f"{method} {path} with {full_b.label}: {answer.status_code}")
    listed = session.get(
        f"{base_url}/v1/invocations", params={"limit": 100}, headers=full_b.headers(), timeout=30
    ).json()["invocations"]
    leaked = [i["id"] for i in listed if owners.get(i["id"]) != TENANT_B]
    if leaked:
        fuzzer.failures.append(f"{full_b.label} lists invocations of others: {leaked}")
    fuzzer.run.failures = len(fuzzer.failures)
    record(fuzzer.run)
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures)
    assert fuzzer.run.cases > 0 and fuzzer.run.stateful_steps > 0, fuzzer.run.line()
    assert of_a, "the fuzzer made no invocation in tenant A"
