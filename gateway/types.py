"""Type names shared across the gateway."""

from __future__ import annotations

from typing import TypeAlias

import falcon

#: The WSGI app with Falcon's own request and response classes.
WsgiApp: TypeAlias = "falcon.App[falcon.Request, falcon.Response]"
