"""`python -m runtime.worker`: the worker process."""

from __future__ import annotations

import sys

from runtime.worker.process import main

sys.exit(main())
