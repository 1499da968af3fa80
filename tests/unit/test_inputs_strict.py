"""Unknown input fields are refused by default (422 naming them), with a per-function opt-out."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from runtime import Context, function
from runtime.errors import FunctionDefinitionError, InputInvalid
from runtime.registry import FunctionSpec
from runtime.settings import Settings
from tests.unit.conftest import assert_problem, invoke

SETTINGS = Settings.from_env(database_url="sqlite://", broker_url="memory://")


class Greeting(BaseModel):
    name: str = Field(min_length=1)


def declare(model: type[BaseModel], **options: object) -> FunctionSpec:
    def handler(ctx: Context, payload: Greeting) -> None:
        return None

    handler.__annotations__["payload"] = model
    return function(**options)(handler)  # type: ignore[call-overload,no-any-return]


def refusal(spec: FunctionSpec, data: dict[str, object]) -> list[dict[str, object]]:
    with pytest.raises(InputInvalid) as refused:
        spec.resolve(SETTINGS).validate_input(data)
    return refused.value.errors


def test_an_unknown_field_is_refused_naming_it_with_the_closest_field():
    errors = refusal(declare(Greeting), {"name": "Ada", "nme": "x"})
    assert errors == [{"loc": ["nme"], "msg": "unknown field; did you mean 'name'?"}]


def test_unknown_fields_are_reported_beside_the_models_own_problems():
    errors = refusal(declare(Greeting), {"colour": "red"})
    assert [e["loc"] for e in errors] == [["colour"], ["name"]]
    assert errors[0]["msg"] == "unknown field"


def test_known_fields_aliases_and_validation_aliases_are_accepted():
    class Aliased(BaseModel):
        model_config = ConfigDict(populate_by_name=True)
        user_name: str = Field(alias="userName")
        city: str = Field(default="", validation_alias=AliasChoices("city", "town"))

    fn = declare(Aliased).resolve(SETTINGS)
    assert fn.validate_input({"userName": "a", "town": "b"}).user_name == "a"  # type: ignore[attr-defined]
    assert fn.validate_input({"user_name": "a", "city": "b"}).city == "b"  # type: ignore[attr-defined]
    assert refusal(declare(Aliased), {"userName": "a", "county": "b"})[0]["loc"] == ["county"]


def test_extra_fields_allow_lets_the_model_decide():
    fn = declare(Greeting, extra_fields="allow").resolve(SETTINGS)
    assert fn.validate_input({"name": "Ada", "nme": "x"}) == Greeting(name="Ada")
    assert "additionalProperties" not in fn.input_schema()


def test_an_input_model_that_sets_extra_itself_keeps_its_choice():
    class Open(BaseModel):
        model_config = ConfigDict(extra="allow")
        name: str

    class Quiet(BaseModel):
        model_config = ConfigDict(extra="ignore")
        name: str

    kept = declare(Open).resolve(SETTINGS).validate_input({"name": "A", "tag": "t"})
    assert kept.model_extra == {"tag": "t"}
    assert declare(Quiet).resolve(SETTINGS).validate_input({"name": "A", "tag": "t"}) == Quiet(
        name="A"
    )
    # extra_fields="forbid" refuses them whatever the model says
    assert refusal(declare(Open, extra_fields="forbid"), {"name": "A", "tag": "t"})[0]["loc"] == [
        "tag"
    ]


def test_a_bad_extra_fields_value_fails_at_declaration():
    with pytest.raises(FunctionDefinitionError, match="extra_fields"):
        declare(Greeting, extra_fields="ignore")


def test_the_schema_says_additional_properties_false_where_fields_are_refused():
    fn = declare(Greeting).resolve(SETTINGS)
    assert fn.input_schema()["additionalProperties"] is False
    assert fn.describe()["input_schema"]["additionalProperties"] is False


def test_the_api_refuses_an_unknown_field_with_422_and_stores_nothing(
    client, headers, runtime, tenant
):
    # When a caller sends a typo beside a valid input
    result = invoke(client, headers, "echo", {"message": "hi", "mesage": "x"})
    # Then it is a 422 naming the field, and nothing was accepted
    problem = assert_problem(result, 422)
    assert {"loc": ["mesage"], "msg": "unknown field; did you mean 'message'?"} in problem["errors"]
    assert runtime.store.invocations.counts_by_status() == {}
    # And the function's published schema says so
    document = client.simulate_get("/openapi.json").json
    assert document["components"]["schemas"]["echo.Input"]["additionalProperties"] is False


def test_the_api_404_for_an_unknown_function_suggests_the_closest(client, headers):
    problem = assert_problem(invoke(client, headers, "ecko", {"message": "hi"}), 404)
    assert "did you mean 'echo'?" in problem["detail"]
    problem = assert_problem(client.simulate_get("/v1/functions/ecko", headers=headers), 404)
    assert "did you mean 'echo'?" in problem["detail"]
