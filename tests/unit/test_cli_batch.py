"""`ferry invoke NAME --batch FILE.jsonl`: one input per line, each line's id or its errors."""

from __future__ import annotations

import io
import json

import pytest

from tests.unit.test_cli import db_url, ferry, migrated  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("restore_logging")


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_batch_file_prints_each_lines_id_or_errors(ferry, migrated, tmp_path):  # noqa: F811
    ferry("tenants", "create", "acme")
    path = tmp_path / "inputs.jsonl"
    path.write_text('{"message": "a"}\n\n{"nope": 1}\n{not json\n{"message": "d"}\n')
    ran = ferry("invoke", "echo", "--tenant", "acme", "--batch", str(path))
    assert ran.code == 1  # two lines failed
    shown = lines(ran.out)
    assert [s["line"] for s in shown] == [1, 3, 4, 5]  # in the file's order, blanks skipped
    by_line = {s["line"]: s for s in shown}
    assert by_line[1]["status"] == "queued" and by_line[1]["replayed"] is False
    assert by_line[5]["status"] == "queued"
    assert by_line[3]["errors"][0]["loc"][0] == "input"
    assert "not JSON" in by_line[4]["errors"][0]["msg"]
    assert "2 line(s) failed" in ran.err
    stored = migrated.invocations.get(by_line[1]["id"])
    assert stored.trigger == "cli" and stored.payload["message"] == "a"
    assert migrated.invocations.counts_by_status() == {"queued": 2}


def test_a_batch_from_stdin_of_more_than_a_thousand_lines(ferry, migrated, monkeypatch):  # noqa: F811
    ferry("tenants", "create", "acme")
    text = "".join(json.dumps({"message": f"m{i}"}) + "\n" for i in range(1001))
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    ran = ferry("invoke", "echo", "--tenant", "acme", "--batch", "-")
    assert ran.code == 0, ran.err
    shown = lines(ran.out)
    assert [s["line"] for s in shown] == list(range(1, 1002))
    assert migrated.invocations.counts_by_status() == {"queued": 1001}


def test_batch_refuses_key_and_a_missing_file(ferry, migrated, tmp_path):  # noqa: F811
    ferry("tenants", "create", "acme")
    missing = ferry("invoke", "echo", "--tenant", "acme", "--batch", str(tmp_path / "nope"))
    assert missing.code == 1 and "--batch" in missing.err
    path = tmp_path / "one.jsonl"
    path.write_text('{"message": "a"}\n')
    keyed = ferry("invoke", "echo", "--tenant", "acme", "--batch", str(path), "--key", "k")
    assert keyed.code == 1 and "--key" in keyed.err
    assert migrated.invocations.counts_by_status() == {}
