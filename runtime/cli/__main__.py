"""`python -m runtime.cli`: the `ferry` command without its console script."""

from __future__ import annotations

import sys

from runtime.cli import main

sys.exit(main())
