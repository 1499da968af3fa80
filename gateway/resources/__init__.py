"""HTTP resources, one module per noun.

Each module has `add_routes(app, runtime)`; `gateway.app.RESOURCE_MODULES` lists the modules
the app mounts, and `gateway.operations.OPERATIONS` describes their operations.
"""

from __future__ import annotations
