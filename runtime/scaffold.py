"""`ferry new`: write a function module and its test from the templates beside this file."""

from __future__ import annotations

import keyword
import string
from importlib import resources
from pathlib import Path

from runtime.errors import AlreadyExists, BadRequest, ConfigurationError
from runtime.registry import Registry
from runtime.settings import Settings

#: The input the generated function and its test use; `ferry new` prints it in a hint.
EXAMPLE_INPUT = {"name": "Ada"}
#: Names the generated module itself defines or imports: a function cannot take them.
RESERVED = frozenset(
    {"Input", "Output", "Context", "Permanent", "function", "BaseModel", "Field", "annotations"}
)
#: Longest name, so the generated files stay within the line length.
MAX_NAME = 40
TESTS = Path("tests") / "unit"


def check_name(name: str) -> None:
    """Refuse a name that cannot be a function module and a Python function."""
    if keyword.iskeyword(name):
        raise BadRequest(f"{name!r} is a Python keyword, so it cannot name a function; try {name}_")
    if not name.isidentifier() or not name.isascii():
        raise BadRequest(f"{name!r} is not a Python identifier (use letters, digits and _)")
    if name.startswith("_") or name in RESERVED:
        raise BadRequest(f"{name!r} cannot be a function name: it is private or reserved")
    if len(name) > MAX_NAME:
        raise BadRequest(f"{name!r} is longer than {MAX_NAME} characters")


def _render(template: str, name: str, package: str) -> str:
    text = resources.files("runtime").joinpath("templates", template).read_text("utf-8")
    # The test's own imports, in the order isort keeps them (sorted by module).
    imports = {
        package: f"from {package} import {name} as module",
        "runtime": "from runtime import Permanent",
        "runtime.errors": "from runtime.errors import InputInvalid",
        "runtime.testing": "from runtime.testing import FunctionHarness",
    }
    ordered = "\n".join(line for _module, line in sorted(imports.items()))
    return string.Template(text).substitute(name=name, imports=ordered)


def write_function(
    name: str, *, package: str, settings: Settings, root: Path | None = None
) -> list[Path]:
    """Write `<package>/<name>.py` and `tests/unit/test_fn_<name>.py` under `root` (cwd).

    The test runs the handler with `runtime.testing.FunctionHarness`: no worker needed.
    Writes nothing when either file exists or a function of that name is registered.
    Returns the two paths, relative to `root`.
    """
    check_name(name)
    root = root or Path.cwd()
    module = Path(*package.split(".")) / f"{name}.py"
    test = TESTS / f"test_fn_{name}.py"
    for folder in (module.parent, test.parent):
        if not (root / folder).is_dir():
            raise ConfigurationError(
                f"no {folder}/ folder here; run `ferry new` from the project's root"
            )
    for path in (module, test):
        if (root / path).exists():
            raise AlreadyExists(f"{path} exists already; `ferry new` does not overwrite files")
    if name in Registry.load(settings.functions_module, settings):
        raise AlreadyExists(f"a function named {name!r} exists already")
    contents = {
        module: _render("function.py.tmpl", name, package),
        test: _render("test_function.py.tmpl", name, package),
    }
    for path, text in contents.items():
        with open(root / path, "x", encoding="utf-8") as out:  # "x": never overwrite
            out.write(text)
    return [module, test]
