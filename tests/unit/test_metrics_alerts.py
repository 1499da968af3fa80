"""deploy/prometheus/alerts.yml: valid for Prometheus, and each alert fires when it should.

`promtool check rules` validates the file; `promtool test rules` replays synthetic
series through every alert and compares what fires. The test file is JSON, which YAML
reads as it is, so no YAML library is needed. promtool comes with Debian's
`prometheus` package; these tests skip without it locally and fail under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules(promtool):
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_every_alert_explains_its_threshold_in_a_comment():
    # Given the rules file as text (comments are not part of the parsed YAML)
    lines = ALERTS.read_text().splitlines()
    alerts = [i for i, line in enumerate(lines) if re.match(r"\s*- alert: ", line)]
    # Then each alert is preceded by a comment block that states a number or duration
    assert len(alerts) == 9
    for index in alerts:
        comment = []
        for line in reversed(lines[:index]):
            if not line.strip().startswith("#"):
                break
            comment.append(line)
        assert comment, f"no comment above {lines[index].strip()}"
        assert re.search(r"\d", " ".join(comment)), f"no threshold in the comment of {lines[index]}"


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def alert(name: str, at: str, *expected: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(expected)}


def fired(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"exp_labels": labels, "exp_annotations": annotations}


SCENARIOS: list[dict[str, Any]] = [
    {  # a broken downstream: most of `flaky`'s attempts retry; `calm` retries a few
        "interval": "1m",
        "input_series": [
            series("ferry_retries_total", "0+120x40", function="flaky"),
            series("ferry_attempts_total", "0+120x40", function="flaky", outcome="retrying"),
            series("ferry_attempts_total", "0+30x40", function="flaky", outcome="succeeded"),
            series("ferry_retries_total", "0+6x40", function="calm"),
            series("ferry_attempts_total", "0+600x40", function="calm", outcome="succeeded"),
        ],
        "alert_rule_test": [
            alert("FerryRetryStorm", "5m"),  # not for 10 minutes yet
            alert(
                "FerryRetryStorm",
                "30m",
                fired(
                    {"severity": "warning", "function": "flaky"},
                    {
                        "summary": "Retry storm in flaky",
                        "description": "flaky retries 2 attempts/s; most of its attempts fail. Check what it calls.",
                    },
                ),
            ),
        ],
    },
    {  # two gateway replicas report the same queue figures: max, not sum
        "interval": "1m",
        "input_series": [
            series("ferry_queue_length", "1500x30", queue="default", instance="a"),
            series("ferry_queue_length", "1500x30", queue="default", instance="b"),
            series("ferry_queue_length", "600x30", queue="heavy", instance="a"),
            series("ferry_queue_length", "600x30", queue="heavy", instance="b"),
            series(
                "ferry_queue_oldest_message_age_seconds", "0+60x30", queue="default", instance="a"
            ),
            series("ferry_queue_oldest_message_age_seconds", "30x30", queue="heavy", instance="a"),
            series("ferry_queue_workers", "2x30", queue="default", instance="a"),
            series("ferry_queue_workers", "0x30", queue="heavy", instance="a"),
            series("ferry_queue_workers", "0x30", queue="scheduled", instance="a"),
            series("ferry_queue_length", "0x30", queue="scheduled", instance="a"),
        ],
        "alert_rule_test": [
            alert(
                "FerryQueueBacklog",
                "15m",
                fired(
                    {"severity": "warning", "queue": "default"},
                    {
                        "summary": "Queue default has a backlog",
                        "description": "1.5k messages have been waiting in default for 10 minutes.",
                    },
                ),
            ),
            alert("FerryQueueStalled", "8m"),  # over 300 s only since 6m
            alert(
                "FerryQueueStalled",
                "12m",
                fired(
                    {"severity": "critical", "queue": "default"},
                    {
                        "summary": "Queue default is not draining",
                        "description": "Its oldest message has waited 12m 0s.",
                    },
                ),
            ),
            alert(
                "FerryQueueWithoutWorker",
                "10m",
                fired(
                    {"severity": "critical", "queue": "heavy"},
                    {
                        "summary": "Nothing consumes queue heavy",
                        "description": "Messages wait in heavy and no live worker consumes it.",
                    },
                ),
            ),
        ],
    },
    {  # `bad` fails a third of the time; `rare` always fails but finished only 15
        "interval": "1m",
        "input_series": [
            series("ferry_invocations_total", "0+10x40", function="bad", status="failed"),
            series("ferry_invocations_total", "0+20x40", function="bad", status="succeeded"),
            series("ferry_invocations_total", "0+1x40", function="rare", status="failed"),
        ],
        "alert_rule_test": [
            alert(
                "FerryHighFailureRate",
                "30m",
                fired(
                    {"severity": "warning", "function": "bad"},
                    {
                        "summary": "bad fails often",
                        "description": "33.33% of bad's invocations failed over 15 minutes.",
                    },
                ),
            ),
        ],
    },
    {  # workers stop beating at 5m; a worker dies every minute from 20m
        "interval": "1m",
        "input_series": [
            series("ferry_workers", "2x4 0x30", state="live", instance="a"),
            series("ferry_workers_lost_total", "0x20 1+1x10", instance="a"),
            series("ferry_scrape_source_up", "1x30", source="store", instance="a"),
            series("ferry_scrape_source_up", "1x2 0x28", source="broker", instance="a"),
        ],
        "alert_rule_test": [
            alert("FerryNoLiveWorker", "3m"),
            alert(
                "FerryNoLiveWorker",
                "10m",
                fired(
                    {"severity": "critical"},
                    {
                        "summary": "No Ferry worker is alive",
                        "description": "No worker has sent a heartbeat recently; accepted invocations are not running.",
                    },
                ),
            ),
            alert("FerryWorkerCrashLoop", "19m"),
            alert(
                "FerryWorkerCrashLoop",
                "25m",
                fired(
                    {"severity": "critical"},
                    {
                        "summary": "Ferry workers keep dying",
                        "description": "5 workers were lost in 15 minutes; look at their logs and the OOM killer.",
                    },
                ),
            ),
            alert(
                "FerryMetricsSourceDown",
                "10m",
                fired(
                    {"severity": "warning", "source": "broker"},
                    {
                        "summary": "Ferry cannot read its broker for metrics",
                        "description": "/metrics could not read the broker; /readyz tells more.",
                    },
                ),
            ),
        ],
    },
    {  # host a sweeps every minute until 10m, then fails; host b's sweep stopped at 2m
        "interval": "1m",
        "input_series": [
            series("ferry_sweep_last_success_timestamp_seconds", "0+60x10 600x20", instance="a"),
            series("ferry_sweep_last_success_timestamp_seconds", "0+60x2 120x28", instance="b"),
            series("ferry_sweep_failures_total", "0x10 60+60x20", instance="a"),
        ],
        "alert_rule_test": [
            alert("FerrySweepStalled", "10m"),  # host b alone stalled: a sweeps for both
            alert("FerrySweepStalled", "13m"),  # 180 s without a sweep, but not for 1m yet
            alert(
                "FerrySweepStalled",
                "15m",
                fired(
                    {"severity": "critical"},
                    {
                        "summary": "Ferry's sweep has stalled",
                        "description": "No sweep has completed for 5m 0s; retries and delayed invocations are not sent. See sweep_failed in the worker logs.",
                    },
                ),
            ),
        ],
    },
    {  # no gateway reports workers at all
        "interval": "1m",
        "input_series": [series("ferry_queue_length", "0x10", queue="default")],
        "alert_rule_test": [
            alert(
                "FerryNoLiveWorker",
                "5m",
                fired(
                    {"severity": "critical"},
                    {
                        "summary": "No Ferry worker is alive",
                        "description": "No worker has sent a heartbeat recently; accepted invocations are not running.",
                    },
                ),
            ),
            alert("FerryQueueBacklog", "10m"),
            alert("FerryRetryStorm", "10m"),
        ],
    },
]


def test_each_alert_fires_on_its_symptom_and_not_below_its_threshold(promtool, tmp_path):
    # Given synthetic series for every symptom, with look-alikes that stay below the thresholds
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(
        json.dumps({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": SCENARIOS})
    )
    # When promtool evaluates the rules over them
    result = run(promtool, "test", "rules", str(tests))
    # Then exactly the expected alerts fire, with their labels and texts
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
