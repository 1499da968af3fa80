"""Ferry's HTTP gateway: a Falcon WSGI app over a `runtime.app.Runtime`.

`gateway.app.create_app(runtime)` builds it; `gateway.wsgi:app` is what gunicorn serves.
"""

from __future__ import annotations
