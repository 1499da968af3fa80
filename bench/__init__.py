"""Ferry's benchmark: `python -m bench [--quick]` (see bench/README.md).

Kept free of imports: `FERRY_FUNCTIONS_MODULE=functions,bench.functions` imports this
package in every Ferry process the benchmark starts.
"""

from __future__ import annotations
