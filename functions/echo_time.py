"""Echo a message back with the server's time: the smallest possible Ferry function.

`ferry dev` prints a curl line that invokes this function, so a new installation can
see a succeeded invocation within seconds. It needs no network access and no
configuration, and it touches nothing but its own input.

Input:

- `message`: any text from 1 to 1000 characters.
- `uppercase`: when true, the message comes back in upper case.

Output: the message, the tenant and invocation it ran as (both taken from the API key
and the runtime, never from the input), and the server's time in UTC.

```
curl -X POST "http://127.0.0.1:8000/v1/functions/echo_time/invocations?wait=5" \\
  -H "Authorization: Bearer $FERRY_KEY" -H "Content-Type: application/json" \\
  -d '{"message": "hello, ferry"}'
```
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from runtime import Context, function


class Input(BaseModel):
    message: str = Field(min_length=1, max_length=1000, description="Text to send back.")
    uppercase: bool = Field(default=False, description="Send the message back in upper case.")


class Output(BaseModel):
    message: str
    tenant_id: str
    invocation_id: str
    server_time: datetime = Field(description="The server's time when the function ran (UTC).")


@function(queue="default", max_retries=1, timeout=10)
def echo_time(ctx: Context, payload: Input) -> Output:
    message = payload.message.upper() if payload.uppercase else payload.message
    ctx.log.info("echo_time_answered", uppercase=payload.uppercase)
    return Output(
        message=message,
        tenant_id=ctx.tenant_id,
        invocation_id=ctx.invocation_id,
        server_time=datetime.now(UTC),
    )
