"""`@function` and the registry of functions.

`@function` only describes: it checks the handler's signature and options and returns a
`FunctionSpec`. Nothing is bound to a broker at import time; `Registry.load` collects the
specs of a package and the runtime declares one Dramatiq actor per spec on the broker it
built (see `runtime.worker.broker`).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pydantic

from runtime.callbacks.urls import callback_url_problem
from runtime.errors import FunctionDefinitionError, FunctionNotFound, InputInvalid
from runtime.function_limits import FunctionLimits
from runtime.inputs import ExtraFields, refused_unless_known, unknown_fields
from runtime.secrets.values import SECRET_NAME, SECRET_NAME_RULE
from runtime.settings import Settings
from runtime.suggestions import did_you_mean

QUEUES = ("default", "heavy", "scheduled")
#: Scopes a function may ask of an API key that invokes it over HTTP.
INVOKE_SCOPES = ("invoke", "manage", "admin")
Handler = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class FunctionSpec:
    """What `@function` declared; None means "the deployment's default"."""

    name: str
    handler: Handler
    input_model: type[pydantic.BaseModel]
    output_model: type[pydantic.BaseModel] | None
    description: str
    module: str
    queue: str = "default"
    max_retries: int | None = None
    min_backoff: float | None = None
    max_backoff: float | None = None
    timeout: float | None = None
    retry_on: tuple[type[BaseException], ...] = ()
    permanent_on: tuple[type[BaseException], ...] = ()
    #: The scope an API key needs to invoke it over HTTP.
    invoke_scope: str = "invoke"
    #: Run by schedules, other functions (`ctx.invoke`) and operators only: over HTTP,
    #: only an operator key (`admin`) may invoke it.
    internal: bool = False
    #: Names of the tenant's secrets the handler reads (`ctx.secrets`); each must be set
    #: for the tenant before an invocation is accepted.
    secrets: tuple[str, ...] = ()
    #: Its own concurrency and waiting limits (`runtime.function_limits`).
    limits: FunctionLimits = dataclasses.field(default_factory=FunctionLimits)
    #: The top-level field names and aliases an input may carry, when any other is refused
    #: (422 naming it); None when the Input model decides (see `@function(extra_fields=)`).
    known_fields: frozenset[str] | None = None
    #: Where every invocation's outcome is POSTed unless the request names another URL.
    callback_url: str | None = None

    @property
    def http_scope(self) -> str:
        """The scope an API key needs to invoke this over HTTP."""
        return "admin" if self.internal else self.invoke_scope

    def __call__(self, ctx: Any, payload: Any) -> Any:
        """Call the handler directly (in a unit test, say)."""
        return self.handler(ctx, payload)

    def resolve(self, settings: Settings) -> Function:
        """Fill the options left out from the settings' defaults."""

        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        return Function(
            spec=self,
            max_retries=pick(self.max_retries, settings.default_max_retries),
            min_backoff=pick(self.min_backoff, settings.default_min_backoff_s),
            max_backoff=pick(self.max_backoff, settings.default_max_backoff_s),
            timeout=pick(self.timeout, settings.default_timeout_s),
        )


@dataclasses.dataclass(frozen=True)
class Function:
    """A function as this deployment runs it: the spec with every option decided."""

    spec: FunctionSpec
    max_retries: int
    min_backoff: float
    max_backoff: float
    timeout: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def queue(self) -> str:
        return self.spec.queue

    @property
    def http_scope(self) -> str:
        """The scope an API key needs to invoke this over HTTP (`admin` if internal)."""
        return self.spec.http_scope

    @property
    def limits(self) -> FunctionLimits:
        """Its own concurrency and waiting limits, beside its tenant's."""
        return self.spec.limits

    def validate_input(self, data: Any) -> pydantic.BaseModel:
        """The input as the function's Input; `InputInvalid` with every problem if it isn't.

        Unknown top-level fields are problems too, unless the function lets its Input
        model decide (`known_fields` is None).
        """
        unknown = unknown_fields(data, self.spec.known_fields)
        try:
            validated = self.spec.input_model.model_validate(data)
        except pydantic.ValidationError as ex:
            raise InputInvalid(
                f"the input is not valid for {self.name}",
                errors=unknown + validation_errors(ex),
            ) from ex
        if unknown:
            raise InputInvalid(f"the input is not valid for {self.name}", errors=unknown)
        return validated

    @property
    def refuses_unknown_fields(self) -> bool:
        """Whether an input's unknown top-level fields are refused (else the model decides)."""
        return self.spec.known_fields is not None

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the input; `additionalProperties: false` when unknown fields are refused."""
        schema = self.spec.input_model.model_json_schema()
        if self.refuses_unknown_fields:
            schema["additionalProperties"] = False
        return schema

    def dump_output(self, value: Any) -> dict[str, Any] | None:
        """Validate what the handler returned against its Output model (raises if it isn't)."""
        model = self.spec.output_model
        if model is None:
            return None
        if not isinstance(value, model):
            value = model.model_validate(value)
        dumped: dict[str, Any] = value.model_dump(mode="json")
        return dumped

    def describe(self) -> dict[str, Any]:
        """The contract's `function` object, without `invoke_url` (the gateway adds it)."""
        out = self.spec.output_model
        return {
            "name": self.name,
            "description": self.spec.description,
            "queue": self.queue,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout,
            "input_schema": self.input_schema(),
            "output_schema": out.model_json_schema() if out is not None else None,
            "invoke_scope": self.http_scope,
            "internal": self.spec.internal,
            "secrets": list(self.spec.secrets),
        }


def validation_errors(ex: pydantic.ValidationError) -> list[dict[str, Any]]:
    """`{loc, msg}` per problem, the shape of the API's `errors` list."""
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in ex.errors()]


@typing.overload
def function(handler: Handler) -> FunctionSpec: ...


@typing.overload
def function(
    handler: None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    max_retries: int | None = None,
    min_backoff: float | None = None,
    max_backoff: float | None = None,
    timeout: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    permanent_on: tuple[type[BaseException], ...] = (),
    invoke_scope: str = "invoke",
    internal: bool = False,
    secrets: Sequence[str] = (),
    concurrency: int | None = None,
    max_waiting: int | None = None,
    concurrency_key: str | None = None,
    concurrency_per_key: int | None = None,
    extra_fields: ExtraFields | None = None,
    callback_url: str | None = None,
) -> Callable[[Handler], FunctionSpec]: ...


def function(
    handler: Handler | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    max_retries: int | None = None,
    min_backoff: float | None = None,
    max_backoff: float | None = None,
    timeout: float | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    permanent_on: tuple[type[BaseException], ...] = (),
    invoke_scope: str = "invoke",
    internal: bool = False,
    secrets: Sequence[str] = (),
    concurrency: int | None = None,
    max_waiting: int | None = None,
    concurrency_key: str | None = None,
    concurrency_per_key: int | None = None,
    extra_fields: ExtraFields | None = None,
    callback_url: str | None = None,
) -> FunctionSpec | Callable[[Handler], FunctionSpec]:
    """Declare a Ferry function: `handler(ctx, payload: Input) -> Output`.

    `invoke_scope` is the scope an API key needs, besides `invoke`, to invoke it over
    HTTP (`invoke`, `manage` or `admin`); `internal=True` keeps it for schedules,
    `ctx.invoke` and operator keys (HTTP by a tenant's key is refused with 403).
    `secrets` names the tenant's secrets the handler reads as `ctx.secrets[name]`; an
    invocation is refused (422) while one of them is not set for its tenant.
    `concurrency`, `max_waiting`, `concurrency_key` and `concurrency_per_key` are its own
    limits per tenant, beside the tenant's (`runtime.function_limits`).
    An input with a top-level field the Input model does not know is refused (422 naming
    it) unless `extra_fields="allow"` or the model sets `extra` in its `model_config`.
    `callback_url` is where each invocation's outcome is POSTed, signed, when it finishes,
    unless the request names its own (docs/callbacks.md).
    """

    def declare(fn: Handler) -> FunctionSpec:
        where = f"{fn.__module__}.{fn.__qualname__}"
        if queue not in QUEUES:
            raise FunctionDefinitionError(f"{where}: queue must be one of {QUEUES}, not {queue!r}")
        for label, value in (
            ("max_retries", max_retries),
            ("min_backoff", min_backoff),
            ("max_backoff", max_backoff),
        ):
            if value is not None and value < 0:
                raise FunctionDefinitionError(f"{where}: {label} cannot be negative")
        if timeout is not None and timeout <= 0:
            raise FunctionDefinitionError(f"{where}: timeout must be positive")
        for label, classes in (("retry_on", retry_on), ("permanent_on", permanent_on)):
            if not all(inspect.isclass(c) and issubclass(c, BaseException) for c in classes):
                raise FunctionDefinitionError(f"{where}: {label} takes exception classes")
        if invoke_scope not in INVOKE_SCOPES:
            raise FunctionDefinitionError(
                f"{where}: invoke_scope must be one of {INVOKE_SCOPES}, not {invoke_scope!r}"
            )
        if isinstance(secrets, str) or any(
            not isinstance(n, str) or not SECRET_NAME.fullmatch(n) for n in secrets
        ):
            raise FunctionDefinitionError(
                f"{where}: secrets is a list of names, each {SECRET_NAME_RULE}; got {secrets!r}"
            )
        if callback_url is not None and (problem := callback_url_problem(callback_url)):
            raise FunctionDefinitionError(f"{where}: {problem}")
        input_model, output_model = _models_of(fn, where)
        module = sys.modules.get(fn.__module__)
        description = inspect.getdoc(module) if module is not None else None
        return FunctionSpec(
            name=name or fn.__name__,
            handler=fn,
            input_model=input_model,
            output_model=output_model,
            description=(description or inspect.getdoc(fn) or "").strip(),
            module=fn.__module__,
            queue=queue,
            max_retries=max_retries,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            retry_on=tuple(retry_on),
            permanent_on=tuple(permanent_on),
            invoke_scope=invoke_scope,
            internal=internal,
            secrets=tuple(dict.fromkeys(secrets)),
            limits=FunctionLimits.declared(
                where,
                input_model,
                concurrency=concurrency,
                max_waiting=max_waiting,
                concurrency_key=concurrency_key,
                concurrency_per_key=concurrency_per_key,
            ),
            known_fields=refused_unless_known(input_model, extra_fields, where),
            callback_url=callback_url,
        )

    return declare if handler is None else declare(handler)


def _models_of(
    fn: Handler, where: str
) -> tuple[type[pydantic.BaseModel], type[pydantic.BaseModel] | None]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as ex:
        raise FunctionDefinitionError(f"{where}: cannot read its type hints: {ex}") from ex
    params = list(inspect.signature(fn).parameters)
    if len(params) != 2:
        raise FunctionDefinitionError(f"{where}: a handler takes (ctx, payload)")
    input_model = hints.get(params[1])
    if not (inspect.isclass(input_model) and issubclass(input_model, pydantic.BaseModel)):
        raise FunctionDefinitionError(
            f"{where}: the payload must be annotated with a pydantic model"
        )
    output_model = hints.get("return", type(None))
    if output_model is type(None):
        return input_model, None
    if not (inspect.isclass(output_model) and issubclass(output_model, pydantic.BaseModel)):
        raise FunctionDefinitionError(f"{where}: the return type must be a pydantic model or None")
    return input_model, output_model


class Registry:
    """The functions of a deployment, by name.

    `ferry dev` reloads functions in place (`replace`): whoever holds this registry sees
    the new functions from then on, and `generation` tells a cache that they changed.
    """

    def __init__(self, functions: dict[str, Function]) -> None:
        self._functions = functions
        #: How many times `replace` gave this registry new functions.
        self.generation = 0

    @classmethod
    def load(cls, packages: str, settings: Settings) -> Registry:
        """Import every module of the comma-separated packages and collect their functions."""
        specs: dict[str, FunctionSpec] = {}
        for package in [p.strip() for p in packages.split(",") if p.strip()]:
            for module in _walk(package):
                for value in vars(module).values():
                    if not isinstance(value, FunctionSpec) or value.module != module.__name__:
                        continue
                    other = specs.get(value.name)
                    if other is not None and other is not value:
                        raise FunctionDefinitionError(
                            f"two functions are named {value.name!r}: in {other.module} and "
                            f"in {value.module}"
                        )
                    specs[value.name] = value
        return cls({name: spec.resolve(settings) for name, spec in sorted(specs.items())})

    def replace(self, other: Registry) -> None:
        """Take the functions of `other` (one assignment: readers see old or new, never a mix)."""
        self._functions = other._functions
        self.generation += 1

    def get(self, name: str) -> Function:
        try:
            return self._functions[name]
        except KeyError:
            raise FunctionNotFound(
                f"no function named {name!r}{did_you_mean(name, self._functions)}"
            ) from None

    def __iter__(self) -> Iterator[Function]:
        return iter(self._functions.values())

    def __len__(self) -> int:
        return len(self._functions)

    def __contains__(self, name: object) -> bool:
        return name in self._functions


def _walk(package: str) -> Iterator[Any]:
    try:
        root = importlib.import_module(package)
    except ImportError as ex:
        raise FunctionDefinitionError(f"cannot import functions package {package!r}: {ex}") from ex
    yield root
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."):
        yield importlib.import_module(info.name)
