"""py-spy profiles of Ferry's processes during a run (`python -m bench --profile DIR`).

Only the thread holding the GIL is sampled (py-spy `--gil`): the profiles show CPU, not
waiting. Each profile is py-spy's "raw" format (collapsed stacks, one line per stack with its
sample count; `flamegraph.pl` or speedscope draw it), plus a `.top.txt` beside it: the
share of samples each function appears in (inclusive) and runs itself (self).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)")


def py_spy() -> str | None:
    """py-spy from the running Python's environment, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(
    pid: int, seconds: float, out: Path, *, subprocesses: bool = False
) -> subprocess.Popen[bytes] | None:
    """Start sampling `pid` for `seconds` into `out` (raw format); None without py-spy."""
    tool = py_spy()
    if tool is None:
        return None
    argv = [tool, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    # --gil: only the thread holding the GIL is sampled, so the profile shows where the
    # process spends CPU, not where its threads wait for PostgreSQL or Redis.
    argv += ["--gil", "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, top: int = 45) -> str:
    """The functions most samples were in, inclusive and self, as text."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE_NUMBER.sub(")", f) for f in stack.split(";")]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in own.most_common(25)]
    return "\n".join(lines) + "\n"


def finish(process: subprocess.Popen[bytes] | None, raw: Path) -> None:
    """Wait for a recording and write its summary beside it."""
    if process is None:
        return
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        return
    if raw.exists():
        raw.with_suffix(".top.txt").write_text(summarize(raw))
