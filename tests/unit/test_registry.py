"""`@function` declarations, the registry, settings and log redaction (no servers needed)."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from pydantic import BaseModel

from runtime import Context, Permanent, function
from runtime.errors import FunctionDefinitionError, FunctionNotFound, InputInvalid, SettingsInvalid
from runtime.logs import configure_logging
from runtime.registry import FunctionSpec, Registry
from runtime.settings import Settings


class In(BaseModel):
    n: int


class Out(BaseModel):
    doubled: int


def test_function_reads_models_from_type_hints_and_keeps_options():
    @function(queue="heavy", max_retries=5, timeout=12, permanent_on=(KeyError,))
    def double(ctx: Context, payload: In) -> Out:
        return Out(doubled=payload.n * 2)

    assert isinstance(double, FunctionSpec)
    assert (double.name, double.queue, double.max_retries, double.timeout) == (
        "double",
        "heavy",
        5,
        12,
    )
    assert double.input_model is In and double.output_model is Out
    assert double.permanent_on == (KeyError,)
    # Still callable as the plain handler, for unit tests of a function.
    assert double(None, In(n=2)) == Out(doubled=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "urgent"}, "queue must be one of"),
        ({"max_retries": -1}, "max_retries cannot be negative"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"retry_on": ("ValueError",)}, "retry_on takes exception classes"),
    ],
)
def test_bad_options_fail_at_declaration(options, message):
    with pytest.raises(FunctionDefinitionError, match=message):
        function(**options)(lambda ctx, payload: None)


def test_handlers_must_be_typed_with_pydantic_models():
    def untyped(ctx, payload):
        return None

    def wrong_arity(ctx: Context) -> None:
        return None

    def bad_return(ctx: Context, payload: In) -> dict:
        return {}

    with pytest.raises(FunctionDefinitionError, match="pydantic model"):
        function(untyped)
    with pytest.raises(FunctionDefinitionError, match=r"\(ctx, payload\)"):
        function(wrong_arity)
    with pytest.raises(FunctionDefinitionError, match="return type"):
        function(bad_return)


def test_two_functions_with_one_name_stop_start_up():
    with pytest.raises(FunctionDefinitionError, match="two functions are named 'same'"):
        Registry.load("tests.fixtures.broken_dupes", Settings.from_env())


def test_an_unimportable_functions_package_stops_start_up():
    with pytest.raises(FunctionDefinitionError, match="cannot import"):
        Registry.load("no_such_package_here", Settings.from_env())


def test_registry_fills_defaults_from_settings_and_validates_input():
    settings = Settings.from_env(default_max_retries=7, default_timeout_s=42)
    registry = Registry.load("tests.fixtures.functions", settings)
    bad_output = registry.get("bad_output")  # declares max_retries=3, no timeout
    assert (bad_output.max_retries, bad_output.timeout) == (3, 42)
    with pytest.raises(FunctionNotFound):
        registry.get("nope")
    with pytest.raises(InputInvalid) as caught:
        registry.get("echo").validate_input({"message": 5})
    assert caught.value.errors == [{"loc": ["message"], "msg": "Input should be a valid string"}]
    described = registry.get("echo").describe()
    assert described["input_schema"]["properties"]["message"]["type"] == "string"
    assert "Probe functions" in described["description"]


def test_every_module_registers_under_the_broker_it_is_given():
    from dramatiq.brokers.stub import StubBroker

    from runtime.worker.broker import declare_actors

    settings = Settings.from_env()
    registry = Registry.load("functions,tests.fixtures.functions", settings)
    broker = StubBroker()
    actors = declare_actors(broker, registry, lambda fn: lambda invocation_id: None)
    assert set(actors) == {f.name for f in registry} == set(broker.get_declared_actors())


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FERRY_WORKER_THREADS", "lots")
    monkeypatch.setenv("FERRY_DATABASE_URL", "mysql://nope")
    with pytest.raises(SettingsInvalid) as caught:
        Settings.from_env()
    assert "FERRY_WORKER_THREADS" in str(caught.value)
    assert "FERRY_DATABASE_URL" in str(caught.value)


def test_logs_are_json_with_secrets_redacted():
    stream = io.StringIO()
    configure_logging(Settings.from_env(log_level="info"), stream=stream)
    key = "fy_0123456789ab_" + "A" * 43
    structlog.get_logger("t").info(
        "something_happened",
        password="hunter2",
        api_key="k",
        headers={"Authorization": "Bearer x"},
        note=f"called with {key}",
        nested=[{"token": "t"}],
        tenant_id="acme",
        db_password="p",
        passed_over=3,
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "something_happened" and line["tenant_id"] == "acme"
    assert line["password"] == line["api_key"] == line["db_password"] == "[redacted]"
    assert line["passed_over"] == 3  # a word that merely starts with "pass" is not a secret
    assert line["headers"] == {"Authorization": "[redacted]"}
    assert line["nested"] == [{"token": "[redacted]"}]
    assert key not in line["note"] and "[redacted]" in line["note"]


def test_permanent_and_retryable_are_ferry_errors():
    assert issubclass(Permanent, Exception)
    assert (
        Permanent().message == "The attempt failed for a reason that will not pass; do not retry."
    )
