"""Per-tenant limit figures for `/metrics`, read from the store at scrape time.

The only metrics labelled by tenant whatever `FERRY_METRICS_TENANT_LABEL` says, so their
series are kept to the tenants that matter:

- `ferry_tenant_limit{tenant, limit}`: the limits that hold for each tenant that set one
  of its own (0: unlimited); every other tenant has `ferry_tenant_limit_default{limit}`.
- `ferry_tenant_waiting{tenant}`, `ferry_tenant_running{tenant}`: tenants with work in
  flight only; a tenant without any has no series (read it as 0).
- `ferry_limit_refusals_total{tenant, limit}` is a counter of the gateway processes
  (`runtime.metrics.Metrics.limit_refused`), not read here.

A scrape costs two statements: the tenants with limits of their own (a scan of
`tenants`: about 10 ms for 10,000 tenants) and one GROUP BY over the unfinished
invocations (the partial index `ix_invocations_tenant_unfinished`: its cost grows with
the work in flight, about 20 ms per 100,000 unfinished invocations). Every gateway
process answers the same figures: aggregate them with `max`, not `sum`.
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.services.limits import COLUMNS, LimitService

log = structlog.get_logger("ferry.metrics")


class TenantLimitsCollector(Collector):
    """Each tenant's limits and its waiting and running counts, read when scraped."""

    def __init__(self, limits: LimitService) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Metric]:
        try:
            own = self.limits.customised()
            counts = self.limits.counts_by_tenant()
        except Exception as ex:
            # The scrape's other figures still answer; `ferry_scrape_source_up` tells of the store.
            log.warning("metrics_source_failed", source="limits", error_type=type(ex).__name__)
            return
        default = GaugeMetricFamily(
            "ferry_tenant_limit_default",
            "The limits of tenants that set none of their own (0: unlimited).",
            labels=["limit"],
        )
        effective = self.limits.default_limits()
        for name in COLUMNS:
            default.add_metric([name], float(getattr(effective, name)))
        yield default
        limit = GaugeMetricFamily(
            "ferry_tenant_limit",
            "The limits that hold for a tenant with limits of its own (0: unlimited).",
            labels=["tenant", "limit"],
        )
        for tenant_id, values in sorted(own.items()):
            for name, value in values.as_dict().items():
                limit.add_metric([tenant_id, name], float(value))
        yield limit
        waiting = GaugeMetricFamily(
            "ferry_tenant_waiting",
            "Invocations of a tenant waiting: queued, scheduled or retrying.",
            labels=["tenant"],
        )
        running = GaugeMetricFamily(
            "ferry_tenant_running", "Invocations of a tenant running now.", labels=["tenant"]
        )
        for tenant_id, count in sorted(counts.items()):
            waiting.add_metric([tenant_id], float(count.waiting))
            running.add_metric([tenant_id], float(count.running))
        yield waiting
        yield running
