"""/metrics after a known workload, on embedded and production backends.

The app is built as the lead will wire it (`create_app`, then `add_metrics`), and the
worker middleware is installed on the runtime's broker before the worker starts.
Counters live in the process-wide registry, so every check compares a scrape after the
workload with one before it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from runtime.app import Runtime
from runtime.metrics import Metrics, tenant_label_enabled
from runtime.worker.consumer import WorkerHandle
from runtime.worker.middleware.metrics import MetricsMiddleware
from runtime.worker.queues import queue_depths
from tests.unit.test_dashboard import build_app, with_heartbeat, with_worker_metrics
from tests.waiting import finished, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: falcon.testing.TestClient) -> Samples:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def metered(runtime: Runtime) -> Iterator[tuple[Runtime, WorkerHandle]]:
    """The runtime with the metrics middleware, a worker and its heartbeat running."""
    handle = with_worker_metrics(runtime).start_worker()
    heartbeat = with_heartbeat(runtime, handle)
    yield runtime, handle
    if heartbeat is not None:
        heartbeat.stop()
    handle.stop(grace_s=5)


@pytest.fixture
def client(runtime: Runtime) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(build_app(runtime))


def test_metrics_count_a_known_workload(metered, client, make_tenant, make_key):
    runtime, _handle = metered
    tenant = make_tenant()
    key = make_key(tenant, "invoke,read")
    auth = {"Authorization": f"Bearer {key}"}
    before = scrape(client)

    # Given 3 echoes, a flaky call that fails once then succeeds, and one that fails for good
    bodies = [("echo", {"message": f"m{n}"}) for n in range(3)]
    bodies += [("flaky", {"fail_times": 1}), ("flaky", {"permanent": True})]
    ids = []
    for name, body in bodies:
        response = client.simulate_post(
            f"/v1/functions/{name}/invocations", json=body, headers=auth
        )
        assert response.status_code == 202
        ids.append(response.json["id"])
    done = [wait_for(finished(runtime, i), what="the workload to finish") for i in ids]
    assert [d.status for d in done] == ["succeeded"] * 4 + ["failed"]
    # The after hook of the last attempt may still be running when the store says finished.
    wait_for(
        lambda: (
            delta(
                before, scrape(client), "ferry_invocation_duration_seconds_count", function="flaky"
            )
            == 3
        ),
        what="the last attempt to be measured",
    )

    # When Prometheus scrapes
    after = scrape(client)

    # Then the counts are exactly the workload's
    assert delta(before, after, "ferry_invocations_total", function="echo", status="succeeded") == 3
    assert (
        delta(before, after, "ferry_invocations_total", function="flaky", status="succeeded") == 1
    )
    assert delta(before, after, "ferry_invocations_total", function="flaky", status="failed") == 1
    assert delta(before, after, "ferry_retries_total", function="flaky") == 1
    assert delta(before, after, "ferry_attempts_total", function="flaky", outcome="retrying") == 1
    assert delta(before, after, "ferry_attempts_total", function="flaky", outcome="failed") == 1
    assert delta(before, after, "ferry_invocation_duration_seconds_count", function="echo") == 3
    assert delta(before, after, "ferry_invocation_duration_seconds_count", function="flaky") == 3
    assert value(after, "ferry_attempts_in_progress", function="echo") == 0
    route = "/v1/functions/{name}/invocations"
    assert (
        delta(before, after, "ferry_http_requests_total", method="POST", route=route, status="202")
        == 5
    )
    assert (
        delta(
            before, after, "ferry_http_request_duration_seconds_count", method="POST", route=route
        )
        == 5
    )
    # and the figures read at scrape time describe the broker and the workers now
    for queue in ("default", "heavy", "scheduled"):
        assert ("ferry_queue_length", frozenset({("queue", queue)})) in after
        assert value(after, "ferry_queue_length", queue=queue) == 0
    assert value(after, "ferry_workers", state="live") == 1
    assert value(after, "ferry_queue_workers", queue="heavy") == 1
    assert value(after, "ferry_scrape_source_up", source="broker") == 1
    assert value(after, "ferry_scrape_source_up", source="store") == 1
    assert not any(
        name == "ferry_invocations_total" and dict(labels).get("tenant") for name, labels in after
    )


def test_route_label_is_the_template_never_the_raw_path(runtime, client, make_tenant, make_key):
    key = make_key(make_tenant(), "read")
    before = scrape(client)
    client.simulate_get("/v1/invocations/not-a-real-id", headers={"Authorization": f"Bearer {key}"})
    client.simulate_get("/no/such/path/12345")
    after = scrape(client)
    template = "/v1/invocations/{invocation_id}"
    assert (
        delta(
            before, after, "ferry_http_requests_total", method="GET", route=template, status="404"
        )
        == 1
    )
    assert (
        delta(
            before,
            after,
            "ferry_http_requests_total",
            method="GET",
            route="unmatched",
            status="404",
        )
        == 1
    )
    assert not any("not-a-real-id" in str(labels) or "12345" in str(labels) for _n, labels in after)


def test_queue_length_and_oldest_age_come_from_the_broker(runtime, make_tenant):
    # Given two invocations sent to the broker and no worker consuming
    tenant = make_tenant()
    for n in range(2):
        runtime.invocations.accept(tenant_id=tenant, function="echo", payload={"message": str(n)})
    time.sleep(0.05)  # let the oldest message age measurably (not a timing assertion)
    # When the queues are read
    depths = {d.queue: d for d in queue_depths(runtime.broker)}
    # Then the default queue holds both, and its oldest message has an age
    assert set(depths) == {"default", "heavy", "scheduled"}
    assert depths["default"].length == 2
    assert depths["heavy"].length == 0 and depths["heavy"].oldest_enqueued_at is None
    assert depths["default"].oldest_age_s(time.time()) > 0


def test_a_broker_that_does_not_answer_is_reported_not_fatal(runtime, client):
    # Given a broker whose queue listing breaks
    def broken() -> set[str]:
        raise ConnectionError("broker gone")

    runtime.broker.get_declared_queues = broken  # type: ignore[method-assign]
    # When Prometheus scrapes, Then it still gets an answer, saying which source failed
    after = scrape(client)
    assert value(after, "ferry_scrape_source_up", source="broker") == 0
    assert value(after, "ferry_scrape_source_up", source="store") == 1
    assert not any(name == "ferry_queue_length" for name, _labels in after)


def test_tenant_is_a_label_only_when_the_setting_is_on(runtime, make_tenant):
    assert tenant_label_enabled(SimpleNamespace(metrics_tenant_label=True))
    assert not tenant_label_enabled(runtime.settings)  # off by default
    # Given the worker middleware recording into metrics with the tenant label on
    registry = CollectorRegistry()
    metrics = Metrics(tenant_label=True, registry=registry)
    runtime.broker.add_middleware(MetricsMiddleware(metrics, runtime.store.claims))
    handle = runtime.start_worker()
    try:
        tenant = make_tenant()
        inv, _ = runtime.invocations.accept(
            tenant_id=tenant, function="echo", payload={"message": "x"}
        )
        wait_for(finished(runtime, inv.id))
        labels = {"function": "echo", "tenant": tenant, "status": "succeeded"}
        # Then the count carries the tenant
        wait_for(
            lambda: registry.get_sample_value("ferry_invocations_total", labels) == 1,
            what="the tenant-labelled count",
        )
    finally:
        handle.stop(grace_s=5)
    # and without the setting the same figure has no tenant label
    plain = Metrics(registry=CollectorRegistry())
    plain.count_outcome(function="echo", tenant_id="t", outcome="succeeded", status="succeeded")
    assert plain.invocations.collect()[0].samples[0].labels == {
        "function": "echo",
        "status": "succeeded",
    }


class BrokenOutcomeMetrics(Metrics):
    """Metrics whose outcome counter fails, as a full or unwritable sink would."""

    def count_outcome(self, **_labels: Any) -> None:
        raise RuntimeError("the metrics sink failed")


def test_a_failure_to_record_is_logged_and_counted_and_the_attempt_still_succeeds(
    runtime, make_tenant
):
    # Given a metrics middleware whose outcome counter fails
    registry = CollectorRegistry()
    metrics = BrokenOutcomeMetrics(registry=registry)
    runtime.broker.add_middleware(MetricsMiddleware(metrics, runtime.store.claims))
    handle = runtime.start_worker()
    try:
        with capture_logs() as logs:
            inv, _ = runtime.invocations.accept(
                tenant_id=make_tenant(), function="echo", payload={"message": "x"}
            )
            # When an attempt runs, Then it succeeds all the same
            assert wait_for(finished(runtime, inv.id)).status == "succeeded"
            wait_for(
                lambda: (
                    registry.get_sample_value(
                        "ferry_metrics_record_errors_total", {"where": "worker"}
                    )
                    == 1
                ),
                what="the error count",
            )
    finally:
        handle.stop(grace_s=5)
    # and the failure is visible in the log, at error level, naming the invocation
    failures = [e for e in logs if e["event"] == "metrics_record_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["invocation_id"] == inv.id
    assert failures[0]["error_type"] == "RuntimeError"
    # The run time was recorded before the outcome failed, so it is kept; the outcome is not.
    assert (
        registry.get_sample_value("ferry_invocation_duration_seconds_count", {"function": "echo"})
        == 1
    )
    assert (
        registry.get_sample_value(
            "ferry_invocations_total", {"function": "echo", "status": "succeeded"}
        )
        is None
    )


def test_the_metrics_middleware_refuses_a_wrong_collaborator(runtime):
    with pytest.raises(TypeError):
        MetricsMiddleware(object(), runtime.store.claims)  # type: ignore[arg-type]
