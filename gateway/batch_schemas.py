"""The bodies of the batch invoke API (`POST /v1/functions/{name}/invocations/batch`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas import Body, FieldError
from runtime.services.batches import MAX_BATCH, ItemOutcome
from runtime.services.invocation_values import IDEMPOTENCY_KEY_PATTERN
from runtime.store.models import Status


class BatchRequestItem(BaseModel):
    """One input of a batch, with its own optional idempotency key."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="The function's input: a JSON object.")
    idempotency_key: Annotated[str, Field(pattern=IDEMPOTENCY_KEY_PATTERN)] | None = Field(
        default=None,
        description="1 to 255 printable ASCII characters; per tenant and function, as the "
        "Idempotency-Key header of a single invoke. Without it the invocation's id is its key.",
    )


class BatchRequest(BaseModel):
    """Up to 1,000 inputs of one function."""

    model_config = ConfigDict(extra="forbid")

    items: list[BatchRequestItem] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItemAccepted(Body):
    """An item stored by this batch (`replayed` false), or stored before under its key."""

    index: int = Field(description="The item's place in the request, from 0.")
    id: str
    status: Status
    replayed: bool


class BatchItemRefused(Body):
    """An item refused on its own (nothing stored for it): its input, or a key conflict."""

    index: int = Field(description="The item's place in the request, from 0.")
    status: Literal[422]
    type: str = Field(description="input-invalid or idempotency-conflict.")
    errors: list[FieldError]


class BatchResult(Body):
    """One entry per item, in the request's order."""

    items: list[BatchItemAccepted | BatchItemRefused]

    @classmethod
    def of(cls, outcomes: list[ItemOutcome]) -> BatchResult:
        items: list[BatchItemAccepted | BatchItemRefused] = []
        for outcome in outcomes:
            if outcome.invocation is None:
                items.append(
                    BatchItemRefused(
                        index=outcome.index,
                        status=422,
                        type=outcome.problem or "input-invalid",
                        errors=[FieldError.model_validate(e) for e in outcome.errors],
                    )
                )
            else:
                items.append(
                    BatchItemAccepted(
                        index=outcome.index,
                        id=outcome.invocation.id,
                        status=outcome.invocation.status,
                        replayed=not outcome.created,
                    )
                )
        return cls(items=items)


#: The models `gateway.openapi` adds to the document's components.
BATCH_MODELS: tuple[type[BaseModel], ...] = (BatchRequest, BatchResult)
