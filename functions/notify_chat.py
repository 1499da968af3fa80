"""Post a message to the tenant's team chat through its incoming-webhook URL.

Slack, Mattermost, Rocket.Chat and Microsoft Teams' workflows all take a JSON
`{"text": ...}` POSTed to an incoming-webhook URL, and that URL is itself the credential:
whoever holds it posts to the channel. So it is a secret of the tenant, set once and
never sent in an invocation's input:

```
ferry secrets set --tenant acme chat_webhook_url < url.txt
# or, with a manage key: PUT /v1/secrets/chat_webhook_url {"value": "https://hooks..."}
```

Input: `text` (1 to 4000 characters). Output: the chat service's `status_code`. An
invocation is refused (422) while the tenant has not set `chat_webhook_url`.

Outcomes: a 2xx answer succeeds; a 5xx or 429 answer, a dropped connection or a timeout
is retried with backoff; any other answer fails at once (the URL was revoked, say). An
error names the chat host and the status only; the URL (the secret) is never in it,
and Ferry would replace it by `[secret:chat_webhook_url]` anyway. The request goes out
through `ctx.http`, so an internal address is refused unless `FERRY_OUTBOUND_ALLOW`
permits it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, Field

from runtime import Context, Permanent, Retryable, function

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0


class Input(BaseModel):
    text: str = Field(min_length=1, max_length=4000, description="The message to post.")


class Output(BaseModel):
    status_code: int


@function(
    queue="default",
    max_retries=5,
    min_backoff=2,
    max_backoff=120,
    timeout=30,
    secrets=["chat_webhook_url"],
)
def notify_chat(ctx: Context, payload: Input) -> Output:
    url = ctx.secrets["chat_webhook_url"]
    host = urlsplit(url).hostname or "?"
    try:
        response = ctx.http.post(
            url,
            json={"text": payload.text},
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            allow_redirects=False,
            read_body=False,
        )
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as ex:
        raise Retryable(f"could not reach {host}: {type(ex).__name__}") from ex
    except requests.exceptions.RequestException as ex:
        raise Permanent(f"cannot post to {host}: {type(ex).__name__}") from ex
    status = response.status_code
    if 200 <= status < 300:
        ctx.log.info("chat_posted", host=host, status_code=status)
        return Output(status_code=status)
    if status >= 500 or status == 429:
        raise Retryable(f"{host} answered {status}")
    raise Permanent(f"{host} answered {status}; check the tenant's chat_webhook_url")
