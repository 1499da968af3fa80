"""Tests of the Python client (`client/`, package `ferry_client`).

It is its own distribution: `.ci/run` installs it into the venv. Where it is not
installed these tests are skipped with the reason, except under CI, where they fail.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

if importlib.util.find_spec("ferry_client") is None:
    _MISSING = "ferry_client is not installed (pip install -e ./client)"
    if os.environ.get("CI"):
        pytest.fail(_MISSING + ": CI must install it (see .ci/run)", pytrace=False)
    pytest.skip(_MISSING, allow_module_level=True)
