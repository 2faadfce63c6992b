"""The ``Settings`` class: one field per environment variable, each with its description."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import NoDecode, SettingsConfigDict

from gateway.settings.checks import (
    DEFAULT_RETRY_SCHEDULE,
    SIGNATURE_VERSIONS,
    LogLevel,
    SettingsChecks,
    SignatureVersion,
)


class Settings(SettingsChecks):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        # `NAME=` (as .env.example has it) means unset: the default applies.
        env_ignore_empty=True,
        # "inf" or "nan" would pass `gt=0` (inf) or make every comparison false (nan).
        allow_inf_nan=False,
    )

    # --- state -------------------------------------------------------------------------------
    REDIS_URL: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis that holds all state (`redis://`, `rediss://` for TLS, or `unix://`). "
        "`serve` and `worker` use the default when it is unset; `dev` starts an embedded Redis "
        "unless it is set.",
    )
    GATEWAY_KEY_PREFIX: str = Field(
        default="cg:",
        description="Prefix of every Redis key and of the arq queue's name, so that several gateways can "
        "share one Redis (1-64 letters, digits or `_ - . : { }`).",
    )
    REDIS_SENTINELS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `host:port` of Redis Sentinels. When set, the master is looked up "
        "under REDIS_SENTINEL_MASTER and REDIS_URL only supplies the database, user and password.",
        examples=["sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"],
    )
    REDIS_SENTINEL_MASTER: str = Field(
        default="mymaster",
        description="Name of the master the sentinels monitor (used only with REDIS_SENTINELS).",
    )
    REDIS_WAIT_REPLICAS: int = Field(
        default=0,
        ge=0,
        description="Replicas that must acknowledge a stored callback (Redis `WAIT`) before the receiver "
        "answers 200; if they do not in time it answers 503 and Plivo retries. 0: do not wait.",
    )
    REDIS_WAIT_TIMEOUT: float = Field(
        default=1.0,
        gt=0,
        description="Seconds the receiver waits for those acknowledgements (with REDIS_WAIT_REPLICAS > 0).",
    )
    DATABASE_URL: SecretStr | None = Field(
        default=None,
        description="The PostgreSQL that holds history (finished requests, events, deliveries, attempts), "
        "as `postgresql://USER:PASSWORD@HOST:5432/DATABASE`. `serve` and `worker` refuse to start "
        "without it; `dev` starts an embedded one unless it is set.",
        examples=["postgresql://gateway:secret@127.0.0.1:5432/gateway"],
    )
    DATABASE_POOL_SIZE: int = Field(
        default=5, ge=1, le=100, description="PostgreSQL connections each process keeps at most."
    )

    # --- upstream (Plivo) --------------------------------------------------------------------
    PLIVO_AUTH_ID: str = Field(
        default="",
        description="Plivo Auth ID, the user of upstream requests' HTTP Basic auth (`dev` uses the "
        "sandbox's).",
        examples=["MAXXXXXXXXXXXXXXXXXX"],
    )
    PLIVO_AUTH_TOKEN: SecretStr = Field(
        default=SecretStr(""),
        description="Plivo Auth Token: authenticates upstream requests and verifies callback signatures. "
        "`serve` refuses to start without it (unless GATEWAY_VERIFY_SIGNATURES=false).",
        examples=["your-plivo-auth-token"],
    )
    PLIVO_MAIN_AUTH_TOKEN: SecretStr = Field(
        default=SecretStr(""),
        description="The main account's Auth Token when PLIVO_AUTH_ID is a subaccount: verifies the "
        "`X-Plivo-Signature-Ma-*` headers.",
        examples=["main-account-auth-token"],
    )
    PLIVO_API_URL: str = Field(
        default="https://api.plivo.com",
        description="Upstream base URL; in development, the URL of `callback-gateway sandbox`.",
    )
    UPSTREAM_CONNECT_TIMEOUT: float = Field(
        default=5.0, gt=0, description="Seconds to establish a connection to Plivo."
    )
    UPSTREAM_READ_TIMEOUT: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for Plivo's answer (also for sending a request and for a free "
        "connection).",
    )
    UPSTREAM_PROXY: str | None = Field(
        default=None,
        description="Proxy for calls to Plivo (`http://`, `https://`; `socks5://` needs "
        "`httpx[socks]`). Unset: direct.",
        examples=["http://proxy.internal:3128"],
    )
    UPSTREAM_MAX_ATTEMPTS: int = Field(
        default=4,
        ge=1,
        description="Attempts per upstream call, with backoff and jitter honouring `Retry-After`; a "
        "create (POST) is resent only after a 429 or a connection never established.",
    )
    UPSTREAM_RETRY_BUDGET: float = Field(
        default=10.0, gt=0, description="Seconds all attempts of one upstream call may take together."
    )
    UPSTREAM_RATE_LIMIT: int = Field(
        default=300,
        ge=0,
        description="Requests to Plivo per UPSTREAM_RATE_WINDOW, shared by every gateway process through "
        "Redis (Plivo's default account limit is 300 per 5 s). 0: no limiter.",
    )
    UPSTREAM_RATE_WINDOW: float = Field(
        default=5.0, gt=0, description="The window of UPSTREAM_RATE_LIMIT, in seconds."
    )
    UPSTREAM_RATE_MAX_WAIT: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a submit over UPSTREAM_RATE_LIMIT waits for a slot before it gets 429.",
    )

    # --- the gateway's own surface -----------------------------------------------------------
    GATEWAY_PUBLIC_URL: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL at which Plivo reaches this gateway: `callback_url` is built from it and "
        "signatures are checked against it (never against the Host header).",
    )
    GATEWAY_API_KEYS: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys for the `/v1/` API (admin keys). `serve` refuses to "
        "start without one; `dev` generates one.",
        examples=["cgk_9Xq2LrTz0bWvYk4NmP7sJd1aHc6EfGuR"],
    )
    GATEWAY_VERIFY_SIGNATURES: bool = Field(
        default=True,
        description="Verify Plivo signatures on callbacks. Switch off only to debug (a warning is logged).",
    )
    GATEWAY_SIGNATURE_VERSIONS: Annotated[list[SignatureVersion], NoDecode] = Field(
        default_factory=lambda: list(SIGNATURE_VERSIONS),
        min_length=1,
        description="Plivo signature versions the receiver accepts, comma-separated (`v3`, `v2`); V3 "
        "decides when a callback carries both. Messaging and Verify callbacks are V2-signed.",
    )
    GATEWAY_ADMIN_PORT: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A second port for the API, `/docs`, `/console/` and `/metrics` (keep it internal); "
        "the public port then serves `/callbacks/plivo` and health alone. Unset: one listener.",
        examples=["8081"],
    )
    GATEWAY_METRICS_TOKEN: SecretStr | None = Field(
        default=None,
        description="When set, the API's `/metrics` requires `Authorization: Bearer <token>`. Unset: open.",
        examples=["a-long-random-scrape-token"],
    )
    GATEWAY_HEADER_TIMEOUT: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers before `serve` closes the "
        "connection (slowloris guard).",
    )
    GATEWAY_MAX_CONNECTIONS: int = Field(
        default=2048,
        gt=0,
        description="Most connections (and requests in flight) one server process holds; past it new "
        "requests get 503.",
    )
    GATEWAY_MAX_BODY_BYTES: int = Field(
        default=256 * 1024,
        gt=0,
        description="Largest request body accepted (API and receiver), in bytes; larger ones get 413.",
    )
    GATEWAY_BODY_READ_TIMEOUT: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request body; slower ones get 408.",
    )
    GATEWAY_DEFAULT_TIMEOUT: int = Field(
        default=3600,
        gt=0,
        description="Seconds a request waits for its callback when the submit gives no `timeout` (at "
        "most GATEWAY_MAX_TIMEOUT).",
    )
    GATEWAY_MAX_TIMEOUT: int = Field(
        default=7 * 86400,
        gt=0,
        validate_default=True,  # the cross-field rule runs when only GATEWAY_DEFAULT_TIMEOUT is set
        description="Largest `timeout` a submit may ask for, in seconds (a larger one gets 400).",
    )
    GATEWAY_IDEMPOTENCY_TTL: int = Field(
        default=86400,
        gt=0,
        description="Seconds an `Idempotency-Key` is remembered (a retried submit gets the first response).",
    )
    GATEWAY_API_RATE_LIMIT: int = Field(
        default=600,
        ge=0,
        description="Requests per GATEWAY_API_RATE_WINDOW each API key may make to the `/v1/` API, "
        "counted in Redis across processes (then 429); the receiver is never counted. 0: no limit.",
    )
    GATEWAY_API_RATE_WINDOW: float = Field(
        default=5.0, gt=0, description="The window of GATEWAY_API_RATE_LIMIT, in seconds."
    )
    GATEWAY_TLS_CERT_FILE: str = Field(
        default="",
        description="PEM certificate (chain): with GATEWAY_TLS_KEY_FILE, `serve` speaks HTTPS itself "
        "(TLS 1.2 or newer). Unset behind a TLS-terminating proxy (docs/https.md).",
        examples=["/etc/callback-gateway/infra/tls/cert.pem"],
    )
    GATEWAY_TLS_KEY_FILE: str = Field(
        default="",
        description="PEM private key of GATEWAY_TLS_CERT_FILE.",
        examples=["/etc/callback-gateway/infra/tls/key.pem"],
    )

    # --- drop-in proxy (/v1/Account/{auth_id}/...) ---------------------------------------------
    GATEWAY_PROXY_TOKEN_SECRET: SecretStr = Field(
        default=SecretStr(""),
        description="Secret from which the drop-in proxy's tokens (`POST /v1/proxy_tokens`) are derived "
        "and relayed callbacks re-signed; only token hashes are stored. Unset: no tokens issued.",
        examples=["a-long-random-secret-of-32-characters-or-more"],
    )
    GATEWAY_PROXY_PASSTHROUGH: bool = Field(
        default=False,
        description="Also accept the real PLIVO_AUTH_TOKEN as the Basic-auth password on the drop-in "
        "proxy (relayed callbacks are then signed with it).",
    )

    # --- receiver and correlation ------------------------------------------------------------
    GATEWAY_UNMATCHED_GRACE: int = Field(
        default=300,
        ge=0,
        description="Seconds a callback with no matching request waits before it becomes "
        "`callback.unmatched`.",
    )
    GATEWAY_DEDUP_TTL: int = Field(
        default=86400,
        gt=0,
        description="Seconds a callback's identity is remembered to drop duplicates (Plivo retries for "
        "minutes).",
    )
    GATEWAY_NONCE_WINDOW: int = Field(
        default=86400,
        ge=0,
        description="Seconds a signature nonce is remembered: a stored callback presented again with the "
        "same nonce gets 403. 0: no check.",
    )

    # --- delivery ----------------------------------------------------------------------------
    GATEWAY_WEBHOOK_SECRET: SecretStr | None = Field(
        default=None,
        description="`whsec_...` secret that signs deliveries to per-request webhook targets (the "
        "`default` tenant's). Unset: generated and stored in Redis on first start.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    GATEWAY_ALLOW_PRIVATE_WEBHOOKS: bool = Field(
        default=False,
        description="Allow webhook targets on loopback and private addresses (SSRF guard off; `dev` "
        "turns it on). Keep false in production.",
    )
    GATEWAY_WEBHOOK_HTTPS_ONLY: bool = Field(
        default=False,
        description="Refuse plain-http webhook targets (per-request targets, `callback_url`, subscriptions).",
    )
    GATEWAY_RETRY_SCHEDULE: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        description="Comma-separated delays in seconds before each delivery attempt; after the last "
        "attempt fails the delivery is dead-lettered.",
    )
    GATEWAY_DELIVERY_TIMEOUT: float = Field(
        default=10.0, gt=0, description="Seconds one webhook attempt may take."
    )
    GATEWAY_OVERLOAD_FLOOR: float = Field(
        default=60.0,
        ge=0,
        description="Least delay in seconds before the next attempt after a timeout or a 429 from a "
        "webhook endpoint.",
    )
    GATEWAY_MAX_RESPONSE_BYTES: int = Field(
        default=4096,
        gt=0,
        description="Bytes of a webhook endpoint's answer that are read (and kept in the delivery log).",
    )
    GATEWAY_RETENTION: int = Field(
        default=30 * 86400,
        gt=0,
        description="Seconds history (requests, events, deliveries, attempts) is kept in PostgreSQL: "
        "daily partitions older than this are dropped.",
    )
    GATEWAY_HOT_RETENTION: int = Field(
        default=600,
        gt=0,
        description="Seconds a finished request (its events, deliveries and attempt logs) stays in Redis "
        "once its last delivery is final and it is in PostgreSQL; reads then come from PostgreSQL.",
    )
    GATEWAY_LINK_TTL: int = Field(
        default=3 * 86400,
        gt=0,
        description="Seconds a finished request's record and its MessageUUID/RequestUUID links stay in "
        "Redis, so that Plivo's late status callbacks still find it (its history is in PostgreSQL).",
    )
    GATEWAY_HISTORY_DELAY: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Seconds a changed request waits before the archiver copies it to PostgreSQL, so that "
        "a burst of changes (result, status callbacks, attempts) is copied once.",
    )
    GATEWAY_HISTORY_WRITER: Literal["process", "inline"] = Field(
        default="process",
        description="Where a worker copies history to PostgreSQL: `process`, a writer child process it "
        "starts and restarts (the copy's CPU stays off the delivery loop), or `inline`, on the worker's "
        "own event loop (one process fewer, for small deployments and tests).",
    )
    GATEWAY_HISTORY_BACKLOG_MAX: int = Field(
        default=50_000,
        gt=0,
        description="Changed requests waiting to be copied to PostgreSQL (the outbox) at which the "
        "gateway refuses new submits and callbacks with 503 rather than lose history; Plivo retries.",
    )
    GATEWAY_WEBHOOK_ALLOW_CIDRS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs that webhook targets may resolve to although the SSRF guard "
        "refuses non-public addresses (e.g. an internal service).",
        examples=["10.20.0.0/16,fd00:20::/48"],
    )
    GATEWAY_SECRET_ROTATION_GRACE: float = Field(
        default=86400.0,
        ge=0,
        description="Seconds a subscription's previous secret keeps signing, next to the new one, after "
        "a rotation.",
    )
    GATEWAY_BREAKER_WINDOW: float = Field(
        default=60.0,
        gt=0,
        description="Seconds over which each subscription's circuit breaker counts attempts and failures.",
    )
    GATEWAY_BREAKER_MIN_REQUESTS: int = Field(
        default=10,
        gt=0,
        description="Attempts within GATEWAY_BREAKER_WINDOW before the breaker may open.",
    )
    GATEWAY_BREAKER_FAILURE_RATE: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of failed attempts within the window (above 0, at most 1) at or above which "
        "the breaker opens.",
    )
    GATEWAY_BREAKER_COOLDOWN: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an open breaker waits before it lets one probe attempt through (half-open); "
        "a success closes it.",
    )
    GATEWAY_DISABLE_AFTER: float = Field(
        default=5 * 86400.0,
        gt=0,
        description="Seconds a subscription may keep failing (no success in between) before it is "
        "disabled, with a `subscription.disabled` operator event.",
    )
    GATEWAY_SUBSCRIPTION_RATE: float = Field(
        default=50.0,
        gt=0,
        description="Deliveries per second to one subscription (a token bucket in Redis, shared by all "
        "workers).",
    )
    GATEWAY_SUBSCRIPTION_BURST: int = Field(
        default=100, gt=0, description="Burst size of that token bucket, in deliveries."
    )
    GATEWAY_SUBSCRIPTION_CONCURRENCY: int = Field(
        default=10,
        gt=0,
        description="Deliveries to one subscription in flight at once, across all workers.",
    )
    GATEWAY_BULK_REPLAY_MAX: int = Field(
        default=500,
        gt=0,
        description="Most failed deliveries one bulk replay call re-queues; call again for the rest.",
    )

    # --- worker ------------------------------------------------------------------------------
    WORKER_CONCURRENCY: int = Field(
        default=64,
        gt=0,
        description="Deliveries (and webhook connections) one worker process runs at once.",
    )
    WORKER_POLL_DELAY: float = Field(
        default=0.05,
        gt=0,
        description="Seconds between arq polls for scheduled work (retries); callbacks are not polled.",
    )
    WORKER_CLAIM_IDLE: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before a callback left unfinished by a dead worker is taken over by another.",
    )
    WORKER_SWEEP_INTERVAL: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between sweeps for timed-out requests and unmatched callbacks.",
    )

    # --- operations (health, metrics, shutdown; docs/operations.md) ---------------------------
    GATEWAY_READY_REQUIRES_WORKER: bool = Field(
        default=True,
        description="`/readyz` also requires a fresh worker heartbeat (the trade-off is under Health "
        "in docs/operations.md).",
    )
    GATEWAY_ACCESS_LOG: bool = Field(
        default=True,
        description="One log line per `/v1/` API request (method, path, status, duration).",
    )
    WORKER_HEARTBEAT_INTERVAL: float = Field(
        default=5.0, gt=0, description="Seconds between a worker's heartbeats."
    )
    WORKER_HEARTBEAT_TTL: float = Field(
        default=15.0,
        gt=0,
        validate_default=True,  # the cross-field rule runs when only the interval is set
        description="Seconds after its last heartbeat a worker counts as gone (more than "
        "WORKER_HEARTBEAT_INTERVAL).",
    )
    WORKER_METRICS_PORT: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which each worker process serves its own Prometheus `/metrics` (the "
        "delivery metrics are there, not on the API). 0: off.",
    )
    WORKER_SHUTDOWN_GRACE: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a worker given SIGTERM lets work in flight finish before cancelling it (it "
        "is then retried by another worker).",
    )
    GATEWAY_TRACE_PROPAGATION: bool = Field(
        default=False,
        description="Carry W3C `traceparent` from a submit into its request, its events and every "
        "webhook attempt (one HGET per correlated callback).",
    )
    GATEWAY_OTEL_ENABLED: bool = Field(
        default=False,
        description="With GATEWAY_TRACE_PROPAGATION=true and the `otel` extra installed: real "
        "OpenTelemetry spans, exported over OTLP unless a tracer provider is configured.",
    )

    # --- logging -----------------------------------------------------------------------------
    LOG_FORMAT: Literal["json", "console"] = Field(
        default="json",
        description="`json` (one object per line; production) or `console` (readable; `dev`'s default).",
    )
    LOG_LEVEL: LogLevel = Field(
        default="INFO",
        description="Least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
    )

    @cached_property
    def api_keys(self) -> frozenset[str]:
        return frozenset(key.get_secret_value() for key in self.GATEWAY_API_KEYS)

    @property
    def callback_url(self) -> str:
        return f"{self.GATEWAY_PUBLIC_URL}/callbacks/plivo"
