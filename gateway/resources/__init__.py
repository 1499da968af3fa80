"""HTTP resources, one module per noun.

Each module has `add_routes(app, runtime)` and `describe_api(runtime)` (its part of the
OpenAPI document); `gateway.app.RESOURCE_MODULES` lists the modules the app mounts.
"""

from __future__ import annotations
