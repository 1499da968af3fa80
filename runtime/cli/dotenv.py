"""`.env` in the current directory, parsed as honcho parses it, before any setting is read.

So `ferry tenants list` beside the production recipe's `.env` uses the same store as
`honcho start` does. One difference from `honcho run`, on purpose: a variable already in
the environment wins over the file (honcho lets the file win), so `FERRY_X=... ferry ...`
always means what it says. The file is never written.
"""

from __future__ import annotations

import os
from pathlib import Path

from honcho.environ import parse

#: The file `ferry` reads, relative to the current directory.
DOTENV = Path(".env")


def load_dotenv(path: Path = DOTENV) -> list[str]:
    """Set each variable of `path` that the environment lacks; their names, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as ex:
        raise OSError(f"cannot read {path}: {ex}") from ex
    added = []
    for name, value in parse(text).items():
        if name not in os.environ:
            os.environ[name] = value
            added.append(name)
    return added
