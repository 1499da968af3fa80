"""Ferry's settings: the one place that reads the environment."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from runtime.errors import SettingsInvalid
from runtime.outbound.policy import parse_allow_entry

#: `FERRY_SECRET_KEY` unless set: good enough for embedded mode only (refused with Redis).
DEV_SECRET_KEY = "ferry-dev-secret-change-me"
#: The shortest `FERRY_SECRET_KEY` production accepts, in bytes.
MIN_PRODUCTION_SECRET_BYTES = 32
#: Words of placeholders (ours and the usual ones): a secret holding one was never made.
SECRET_PLACEHOLDER_WORDS = (
    "change-me",
    "change_me",
    "changeme",
    "replace-with",
    "replace_with",
    "replace-me",
    "placeholder",
    "example",
    "your-secret",
    "ferry-dev-secret",
    "ferry-testing-secret",
)
#: How to make a good one; the refusal says it.
MAKE_SECRET_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"

#: The largest `FERRY_MAX_DELAY_S` there can be (ten years): datetimes stay in range.
MAX_DELAY_LIMIT_S = 10 * 365 * 86400
#: `FERRY_MAX_DELAY_S` unless set: 30 days.
DEFAULT_MAX_DELAY_S = 30 * 86400
#: `FERRY_MAX_WAITS_PER_TENANT` unless set.
DEFAULT_MAX_WAITS_PER_TENANT = 4
#: Threads of one gateway process unless `GUNICORN_THREADS` says otherwise.
DEFAULT_GATEWAY_THREADS = 8
#: `FERRY_FAIR_WINDOW` unless set.
DEFAULT_FAIR_WINDOW = 64


class Settings(BaseSettings):
    """Every `FERRY_*` setting, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore", frozen=True)

    #: SQLAlchemy URL of the invocation store; SQLite embedded, PostgreSQL in production.
    database_url: str = "sqlite:///./ferry.db"
    #: `memory://` runs the in-process broker (embedded mode); `redis://...` runs Redis.
    broker_url: str = "memory://"
    #: Prefix of every Redis key this deployment writes, so deployments can share a server.
    redis_namespace: str = "ferry"
    #: Idle Redis consumers block on a wake-up list instead of polling (runtime/worker/redis_broker.py);
    #: off falls back to Dramatiq's polling consumer. `python -m bench` measures both.
    redis_consumer_wakeup: bool = True
    #: Python package whose modules define the functions.
    functions_module: str = "functions"
    #: Python package whose modules define the schedules.
    schedules_module: str = "schedules"

    #: Seconds the gateway remembers an API key that authenticated (runtime/keycache.py):
    #: a revoked key is refused within this long. 0 reads the key on every request.
    auth_cache_s: float = Field(default=2.0, ge=0, le=300)

    #: The PostgreSQL role functions' `ctx.session` runs as, under row-level security
    #: (docs/tenancy.md); one per deployment when several share a server.
    function_db_role: str = Field(default="ferry_function", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    #: Connections a process keeps: at least its threads (8) plus the sweep and heartbeat,
    #: or connections beyond it are opened and closed per request under load. Besides
    #: these, each thread that runs the hot statements (claim, accept) keeps one of its
    #: own, up to this many per process (`runtime.store.kept`).
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)
    db_connect_timeout_s: int = Field(default=3, ge=1)
    #: PostgreSQL statement_timeout for every query; 0 disables it.
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)

    max_body_bytes: int = Field(default=1_048_576, ge=1)
    #: Largest body of a batch invoke (`POST .../invocations/batch`, up to 1,000 inputs).
    max_batch_body_bytes: int = Field(default=16_777_216, ge=1)
    #: Largest `?wait=` a client may ask for, in seconds.
    max_wait_s: float = Field(default=30.0, ge=0)

    # --- bounds on what one request may ask (issue 12: crafted input, `?wait`) ---------------
    #: The furthest ahead an invocation may be put, by `?delay`, `?at` or any other caller
    #: (seconds; default 30 days). Further is a 400.
    max_delay_s: float = Field(default=DEFAULT_MAX_DELAY_S, gt=0, le=MAX_DELAY_LIMIT_S)
    #: `?wait` requests one tenant may hold at once in one gateway process; past it the
    #: answer is 202 at once, with `Location`. 0 never holds a request.
    max_waits_per_tenant: int = Field(default=DEFAULT_MAX_WAITS_PER_TENANT, ge=0)
    #: `?wait` requests all tenants may hold at once in one gateway process. Unset: half of
    #: the process's threads (`GUNICORN_THREADS`, 8 by default), so waits never take them all.
    max_waits_per_process: int | None = Field(default=None, ge=0)

    worker_threads: int = Field(default=8, ge=1, le=256)
    #: How long an idle consumer waits for a message before polling again (milliseconds).
    worker_poll_ms: int = Field(default=100, ge=1, le=10_000)
    #: Seconds a stopping worker waits for running invocations before it gives them up.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    #: Defaults for `@function` options that a function leaves out.
    default_max_retries: int = Field(default=3, ge=0)
    default_min_backoff_s: float = Field(default=1.0, ge=0)
    default_max_backoff_s: float = Field(default=300.0, ge=0)
    default_timeout_s: float = Field(default=600.0, gt=0)

    #: Group commit in the worker (runtime/store/group_commit.py): a process's claims and
    #: successes wait up to this long (milliseconds) to be written together, one statement
    #: and one commit per batch. 0 (the default) writes each on its own: on the benchmark's
    #: 2-core machine group commit cut the workers' CPU per invocation but lowered the
    #: drain (docs/perf/README.md, "Group commit in the worker").
    group_commit_ms: float = Field(default=0.0, ge=0, le=100)
    #: Successes written in batches (PostgreSQL): a worker thread whose handler returned
    #: hands its success over and takes its next message; the process's successes are
    #: written together after this long (milliseconds), one statement per batch. An
    #: invocation's success is committed this much later; 0 writes each before the thread
    #: goes on (docs/architecture.md, "Successes in batches").
    success_batch_ms: float = Field(default=2.0, ge=0, le=100)
    #: Group commit of single accepts (runtime/store/accept_batches.py, PostgreSQL): a
    #: process's concurrent accepts are written by one statement and one commit, each
    #: answered once it is committed. No window: a lone accept is written at once. On
    #: since each thread keeps its connection: PostgreSQL's CPU per accept about halves
    #: and the gateway's does not grow (docs/perf/README.md, "Issue 15, sixth pass").
    accept_group_commit: bool = True
    #: Whether a claim's commit waits for PostgreSQL to write it to disk. Off (the
    #: default), a database crash may forget the last claims (up to about 3 x
    #: `wal_writer_delay`): their invocations are claimable again and run again, as when
    #: a worker is killed mid-run, and the attempts that ran under them record nothing.
    #: Successes, failures and accepts always wait. Off, the drain is about a sixth faster
    #: on the benchmark's machine (docs/architecture.md, "A claim's commit").
    claim_synchronous_commit: bool = False

    # Leases (runtime/recovery/leases.py): short, renewed by the worker running the attempt.
    #: Seconds a claim holds an invocation unless its worker renews it (every third of it);
    #: about how long a killed worker's attempts wait before they run elsewhere.
    lease_s: float = Field(default=30.0, gt=0)
    #: Seconds past its function's timeout that an attempt's lease is still renewed (the
    #: time limit's own stop, recording the outcome); then it lapses and is reclaimed.
    lease_grace_s: float = Field(default=10.0, ge=0)
    #: Seconds a queued invocation may wait unclaimed before it is sent to the broker again.
    redispatch_after_s: float = Field(default=60.0, gt=0)
    #: How often the dispatcher looks for due, stale or lost invocations (seconds).
    sweep_interval_s: float = Field(default=1.0, gt=0)

    # --- fair dispatch (runtime/dispatch.py, docs/fairness.md) -------------------------------
    #: Send each tenant's work in turn (round-robin, weighted) instead of in arrival order.
    #: Off, every accepted invocation goes to the broker at once; limits still hold.
    fair_dispatch: bool = True
    #: Invocations a tenant of weight 1 may have sent to the broker and not yet started;
    #: the rest wait in the store for their turn. A weight multiplies it.
    fair_window: int = Field(default=DEFAULT_FAIR_WINDOW, ge=1, le=100_000)

    # --- retention (runtime/store/retention.py, runtime/recovery/retention.py) ---------------
    #: Seconds a finished invocation, its attempts and its idempotency key are kept after it
    #: finished, per final status; 0 keeps them forever. A tenant may override each
    #: (`ferry tenants set-retention`). Cancelled ones are kept like failed ones: both can be
    #: retried by hand.
    retention_succeeded_s: int = Field(default=86_400, ge=0)
    retention_failed_s: int = Field(default=604_800, ge=0)
    retention_cancelled_s: int = Field(default=604_800, ge=0)
    #: How often the sweep removes expired invocations (seconds); sooner while it is behind.
    retention_interval_s: float = Field(default=10.0, ge=0)
    #: Invocations removed per statement: each batch is one short transaction.
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)
    #: Seconds an audit record is kept (`runtime.store.audit`); 0 keeps them forever. Until
    #: then nothing changes or removes it; the sweep removes it after.
    retention_audit_s: int = Field(default=365 * 86_400, ge=0)

    # --- per-tenant limits (runtime/store/limits.py, runtime/services/limits.py) -------------
    # Each is the default of a tenant that sets none of its own (`ferry tenants set-limits`).
    # The defaults throttle nothing: 0 is "unlimited" for the rate, concurrency and waiting.
    #: Accepts per second per tenant (token bucket refill); 0: no rate limit.
    default_rate_per_s: float = Field(default=0.0, ge=0, le=1_000_000)
    #: Accepts a tenant may make at once after a quiet spell; 0: one second's worth of the
    #: rate (at least 1).
    default_burst: int = Field(default=0, ge=0, le=10_000_000)
    #: Invocations of one tenant running at once across all workers; 0: no limit.
    default_concurrency: int = Field(default=0, ge=0, le=1_000_000)
    #: Invocations of one tenant waiting (queued + scheduled + retrying); over it, accepts
    #: are refused with 429. 0: no limit.
    default_max_waiting: int = Field(default=0, ge=0, le=100_000_000)
    #: A tenant's share of worker slots in fair dispatch, relative to the others' weights.
    default_weight: int = Field(default=1, ge=1, le=1000)
    #: Seconds a process remembers a tenant's limits: a changed limit applies in other
    #: processes within this long. 0 reads them on every accept.
    limits_cache_s: float = Field(default=2.0, ge=0, le=300)

    # --- the server secret (issue 12: a default or placeholder is refused in production) ---
    #: Server-side secret for signing (webhook keys, dashboard sessions). Outside embedded
    #: mode (a Redis broker) it must be set, at least 32 bytes and no placeholder.
    secret_key: str = Field(default=DEV_SECRET_KEY, min_length=16, validate_default=True)
    #: Server secrets replaced by `secret_key`, comma-separated: stored secrets sealed under
    #: them still open until `ferry secrets rotate` has re-encrypted them (docs/operations.md).
    secret_key_previous: Annotated[tuple[str, ...], NoDecode] = ()
    #: Seconds a tenant's previous webhook signing secret still signs (a second `v1=`) after
    #: it was rotated, so receivers can switch over; 0 drops it at once.
    webhook_secret_grace_s: int = Field(default=86_400, ge=0, le=30 * 86_400)

    #: Label invocation metrics with the tenant (watch the cardinality).
    metrics_tenant_label: bool = False
    # Metrics in every production layout (runtime/metrics_dir.py, docs/operations.md).
    #: Directory shared by the Ferry processes of one host or pod, so each one's counters
    #: add up in one `/metrics`; exported as PROMETHEUS_MULTIPROC_DIR. Unset: each process
    #: counts for itself.
    metrics_dir: str | None = None
    #: `ferry worker` serves its metrics (with `metrics_dir`, the directory's sum) on this
    #: port, for a host, pod or container without a web process. Unset: no server.
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    #: How often a worker records its heartbeat (seconds).
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    #: A worker not seen for this long counts as gone (at least twice the heartbeat).
    worker_stale_after_s: float = Field(default=30.0, gt=0)
    #: How long stopped or lost workers stay listed (seconds).
    worker_retention_s: float = Field(default=86_400.0, gt=0)
    #: Lifetime of a dashboard login (seconds).
    dashboard_session_max_age_s: int = Field(default=28_800, ge=60)
    #: Believe X-Forwarded-Proto (behind a TLS-terminating proxy) for the cookie's Secure flag.
    trust_forwarded_proto: bool = False

    # --- outbound HTTP for functions (`ctx.http`, runtime/outbound.py) ---
    #: Internal targets `ctx.http` may reach anyway: CIDRs, addresses and host names, each with
    #: an optional port; comma-separated (`10.1.0.0/16,hooks.internal:8443,[::1]:9000`).
    outbound_allow: Annotated[tuple[str, ...], NoDecode] = ()
    outbound_connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    outbound_read_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    #: The largest answer body `ctx.http` reads; a longer one fails the request.
    outbound_max_response_bytes: int = Field(default=10_485_760, ge=1)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: `json` for machines, `console` for a terminal.
    log_format: Literal["json", "console"] = "json"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("must be memory:// or a redis:// URL")
        return value

    @field_validator("secret_key")
    @classmethod
    def _made_secret_in_production(cls, value: str, info: ValidationInfo) -> str:
        # `broker_url` is declared (so validated) first; a bad one is reported on its own.
        broker_url = info.data.get("broker_url")
        if broker_url is None or broker_url.startswith("memory://"):
            return value
        problem = secret_key_problem(value)
        if problem:
            raise ValueError(
                f"{problem}; production (a Redis broker) needs a random secret of at least "
                f"{MIN_PRODUCTION_SECRET_BYTES} bytes, made with: {MAKE_SECRET_COMMAND}"
            )
        return value

    @field_validator("metrics_dir")
    @classmethod
    def _unset_when_empty(cls, value: str | None) -> str | None:
        # `FERRY_METRICS_DIR=` (an empty value in an env file) means unset.
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value or None

    @field_validator("outbound_allow", "secret_key_previous", mode="before")
    @classmethod
    def _split_allow_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _known_allow_entries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            parse_allow_entry(entry)  # a ValueError names the entry
        return value

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> Settings:
        if self.worker_stale_after_s < 2 * self.worker_heartbeat_s:
            raise ValueError("worker_stale_after_s must be at least twice worker_heartbeat_s")
        return self

    @property
    def waits_per_process(self) -> int:
        """`FERRY_MAX_WAITS_PER_PROCESS`, or half of the gateway's threads when unset."""
        if self.max_waits_per_process is not None:
            return self.max_waits_per_process
        try:
            threads = int(os.environ.get("GUNICORN_THREADS", str(DEFAULT_GATEWAY_THREADS)))
        except ValueError:
            threads = DEFAULT_GATEWAY_THREADS
        return max(1, threads // 2)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("memory://")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read the environment, naming the variable of any bad value."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as ex:
            problems = []
            for error in ex.errors():
                field = str(error["loc"][0]) if error["loc"] else "?"
                problems.append(f"FERRY_{field.upper()}: {error['msg']}")
            raise SettingsInvalid("; ".join(problems)) from ex


def secret_key_problem(secret: str) -> str | None:
    """Why `secret` is no production secret (default, placeholder, short), or None."""
    lowered = secret.lower()
    if secret == DEV_SECRET_KEY:
        return "is unset or the published development default"
    if any(word in lowered for word in SECRET_PLACEHOLDER_WORDS):
        return "is a placeholder"
    if len(secret.encode()) < MIN_PRODUCTION_SECRET_BYTES:
        return f"is shorter than {MIN_PRODUCTION_SECRET_BYTES} bytes"
    return None
