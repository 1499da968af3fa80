"""Unknown input fields: refused by default, so a typo is a 422 instead of a lost value.

`@function` decides once, from its `extra_fields` option and the Input model, which
top-level keys an input may carry (`known_fields`); `Function.validate_input` reports each
other key as a problem (`{loc: [key], msg}`), beside pydantic's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pydantic

from runtime.errors import FunctionDefinitionError
from runtime.suggestions import did_you_mean

#: `@function(extra_fields=...)`: refuse an input's unknown fields, or let the Input model
#: decide (pydantic's default drops them quietly).
ExtraFields = Literal["forbid", "allow"]


def known_fields_of(model: type[pydantic.BaseModel]) -> frozenset[str]:
    """The top-level keys `model` reads: field names, aliases and validation aliases."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        if field.alias is not None:
            keys.add(field.alias)
        alias = field.validation_alias
        for choice in alias.choices if isinstance(alias, pydantic.AliasChoices) else [alias]:
            if isinstance(choice, str):
                keys.add(choice)
            elif isinstance(choice, pydantic.AliasPath) and isinstance(choice.path[0], str):
                keys.add(choice.path[0])
    return frozenset(keys)


def refused_unless_known(
    model: type[pydantic.BaseModel], extra_fields: str | None, where: str
) -> frozenset[str] | None:
    """The keys an input may carry when others are refused; None when the model decides.

    Unknown fields are refused by default. An Input model that sets `extra` in its own
    `model_config` keeps that choice, and so does a function declared with
    `extra_fields="allow"`; `extra_fields="forbid"` refuses them whatever the model says.
    """
    if extra_fields not in (None, "forbid", "allow"):
        raise FunctionDefinitionError(
            f"{where}: extra_fields must be 'forbid' or 'allow', not {extra_fields!r}"
        )
    if extra_fields == "allow" or issubclass(model, pydantic.RootModel):
        return None
    if extra_fields is None and "extra" in model.model_config:
        return None
    return known_fields_of(model)


def unknown_fields(data: Any, known: frozenset[str] | None) -> list[dict[str, Any]]:
    """`{loc, msg}` per top-level key of `data` not in `known` (None: any key goes)."""
    if known is None or not isinstance(data, Mapping):
        return []
    return [
        {"loc": [key], "msg": f"unknown field{did_you_mean(str(key), known)}"}
        for key in data
        if key not in known
    ]
