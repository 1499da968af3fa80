"""The accept's floor: the same gunicorn and Falcon as Ferry's gateway, nothing behind them.

`bench/floor.py` serves this app with `deploy/gunicorn.conf.py` (gthread, the same
processes and threads) and loads it as it loads Ferry's invoke endpoint. Each POST has
its JSON body read and answers 202 with a small JSON body; no middleware, no validation,
no store, no broker. What a single accept costs above this is Ferry's; this much is the
server's and the framework's.
"""

from __future__ import annotations

import uuid

import falcon


class Invocations:
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        req.get_media()
        resp.status = falcon.HTTP_202
        resp.media = {"id": str(uuid.uuid4()), "function": name, "status": "queued"}


class Health:
    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


app = falcon.App()
app.add_route("/v1/functions/{name}/invocations", Invocations())
app.add_route("/healthz", Health())
