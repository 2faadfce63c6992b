"""Configuration: one typed class whose field names are the environment variable names.

Every field is documented in `.env.example` (a test checks the two agree). Values come from the
process environment first, then from a `.env` file in the working directory.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SignatureVersion = Literal["v3", "v2"]
SIGNATURE_VERSIONS: tuple[SignatureVersion, ...] = ("v3", "v2")
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        # `NAME=` (as .env.example has it) means unset: the default applies.
        env_ignore_empty=True,
    )

    # --- state -------------------------------------------------------------------------------
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    GATEWAY_KEY_PREFIX: str = "cg:"
    REDIS_SENTINELS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    REDIS_SENTINEL_MASTER: str = "mymaster"
    REDIS_WAIT_REPLICAS: int = Field(default=0, ge=0)
    REDIS_WAIT_TIMEOUT: float = Field(default=1.0, gt=0)

    # --- upstream (Plivo) --------------------------------------------------------------------
    PLIVO_AUTH_ID: str = ""
    PLIVO_AUTH_TOKEN: SecretStr = SecretStr("")
    PLIVO_MAIN_AUTH_TOKEN: SecretStr = SecretStr("")
    PLIVO_API_URL: str = "https://api.plivo.com"
    UPSTREAM_CONNECT_TIMEOUT: float = Field(default=5.0, gt=0)
    UPSTREAM_READ_TIMEOUT: float = Field(default=30.0, gt=0)
    UPSTREAM_PROXY: str | None = None
    UPSTREAM_MAX_ATTEMPTS: int = Field(default=4, ge=1)
    UPSTREAM_RETRY_BUDGET: float = Field(default=10.0, gt=0)
    UPSTREAM_RATE_LIMIT: int = Field(default=300, ge=0)
    UPSTREAM_RATE_WINDOW: float = Field(default=5.0, gt=0)
    UPSTREAM_RATE_MAX_WAIT: float = Field(default=10.0, ge=0)

    # --- the gateway's own surface -----------------------------------------------------------
    GATEWAY_PUBLIC_URL: str = "http://127.0.0.1:8000"
    GATEWAY_API_KEYS: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    GATEWAY_VERIFY_SIGNATURES: bool = True
    GATEWAY_SIGNATURE_VERSIONS: Annotated[list[SignatureVersion], NoDecode] = Field(
        default_factory=lambda: list(SIGNATURE_VERSIONS), min_length=1
    )
    GATEWAY_ADMIN_PORT: int | None = Field(default=None, ge=1, le=65535)
    GATEWAY_METRICS_TOKEN: SecretStr | None = None
    GATEWAY_HEADER_TIMEOUT: float = Field(default=10.0, gt=0)
    GATEWAY_MAX_CONNECTIONS: int = Field(default=2048, gt=0)
    GATEWAY_MAX_BODY_BYTES: int = Field(default=256 * 1024, gt=0)
    GATEWAY_BODY_READ_TIMEOUT: float = Field(default=10.0, gt=0)
    GATEWAY_DEFAULT_TIMEOUT: int = Field(default=3600, gt=0)
    GATEWAY_MAX_TIMEOUT: int = Field(default=7 * 86400, gt=0)
    GATEWAY_IDEMPOTENCY_TTL: int = Field(default=86400, gt=0)
    GATEWAY_API_RATE_LIMIT: int = Field(default=600, ge=0)
    GATEWAY_API_RATE_WINDOW: float = Field(default=5.0, gt=0)
    GATEWAY_TLS_CERT_FILE: str = ""
    GATEWAY_TLS_KEY_FILE: str = ""

    # --- drop-in proxy (/v1/Account/{auth_id}/...) ---------------------------------------------
    GATEWAY_PROXY_TOKEN_SECRET: SecretStr = SecretStr("")
    GATEWAY_PROXY_PASSTHROUGH: bool = False

    # --- receiver and correlation ------------------------------------------------------------
    GATEWAY_UNMATCHED_GRACE: int = Field(default=300, ge=0)
    GATEWAY_DEDUP_TTL: int = Field(default=86400, gt=0)
    GATEWAY_NONCE_WINDOW: int = Field(default=86400, ge=0)

    # --- delivery ----------------------------------------------------------------------------
    GATEWAY_WEBHOOK_SECRET: SecretStr | None = None
    GATEWAY_ALLOW_PRIVATE_WEBHOOKS: bool = False
    GATEWAY_WEBHOOK_HTTPS_ONLY: bool = False
    GATEWAY_RETRY_SCHEDULE: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE)
    )
    GATEWAY_DELIVERY_TIMEOUT: float = Field(default=10.0, gt=0)
    GATEWAY_OVERLOAD_FLOOR: float = Field(default=60.0, ge=0)
    GATEWAY_MAX_RESPONSE_BYTES: int = Field(default=4096, gt=0)
    GATEWAY_RETENTION: int = Field(default=30 * 86400, gt=0)
    GATEWAY_WEBHOOK_ALLOW_CIDRS: Annotated[list[str], NoDecode] = Field(default_factory=list)
    GATEWAY_SECRET_ROTATION_GRACE: float = Field(default=86400.0, ge=0)
    GATEWAY_BREAKER_WINDOW: float = Field(default=60.0, gt=0)
    GATEWAY_BREAKER_MIN_REQUESTS: int = Field(default=10, gt=0)
    GATEWAY_BREAKER_FAILURE_RATE: float = Field(default=0.5, gt=0, le=1)
    GATEWAY_BREAKER_COOLDOWN: float = Field(default=30.0, gt=0)
    GATEWAY_DISABLE_AFTER: float = Field(default=5 * 86400.0, gt=0)
    GATEWAY_SUBSCRIPTION_RATE: float = Field(default=50.0, gt=0)
    GATEWAY_SUBSCRIPTION_BURST: int = Field(default=100, gt=0)
    GATEWAY_SUBSCRIPTION_CONCURRENCY: int = Field(default=10, gt=0)
    GATEWAY_BULK_REPLAY_MAX: int = Field(default=500, gt=0)

    # --- worker ------------------------------------------------------------------------------
    WORKER_CONCURRENCY: int = Field(default=64, gt=0)
    WORKER_POLL_DELAY: float = Field(default=0.05, gt=0)
    WORKER_CLAIM_IDLE: float = Field(default=30.0, gt=0)
    WORKER_SWEEP_INTERVAL: float = Field(default=1.0, gt=0)

    # --- operations (health, metrics, shutdown; docs/operations.md) ---------------------------
    GATEWAY_READY_REQUIRES_WORKER: bool = True
    GATEWAY_ACCESS_LOG: bool = True
    WORKER_HEARTBEAT_INTERVAL: float = Field(default=5.0, gt=0)
    WORKER_HEARTBEAT_TTL: float = Field(default=15.0, gt=0)
    WORKER_METRICS_PORT: int = Field(default=0, ge=0, le=65535)
    WORKER_SHUTDOWN_GRACE: float = Field(default=10.0, ge=0)
    GATEWAY_TRACE_PROPAGATION: bool = False
    GATEWAY_OTEL_ENABLED: bool = False

    # --- logging -----------------------------------------------------------------------------
    LOG_FORMAT: Literal["json", "console"] = "json"
    LOG_LEVEL: str = "INFO"

    @field_validator("GATEWAY_API_KEYS", mode="before")
    @classmethod
    def _keys_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("GATEWAY_SIGNATURE_VERSIONS", mode="before")
    @classmethod
    def _versions_csv(cls, value: object) -> object:
        value = _split_csv(value)
        return [v.lower() for v in value] if isinstance(value, list) else value

    @field_validator("REDIS_SENTINELS", mode="before")
    @classmethod
    def _sentinels_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("REDIS_SENTINELS")
    @classmethod
    def _sentinels_valid(cls, value: list[str]) -> list[str]:
        for hostport in value:
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{hostport!r}: expected host:port")
        return value

    @field_validator("GATEWAY_RETRY_SCHEDULE", mode="before")
    @classmethod
    def _schedule_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("GATEWAY_WEBHOOK_ALLOW_CIDRS", mode="before")
    @classmethod
    def _cidrs_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("GATEWAY_WEBHOOK_ALLOW_CIDRS")
    @classmethod
    def _cidrs_valid(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("GATEWAY_RETRY_SCHEDULE")
    @classmethod
    def _schedule_valid(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("needs at least one delay, none negative")
        return value

    @field_validator("GATEWAY_PUBLIC_URL", "PLIVO_API_URL")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("GATEWAY_WEBHOOK_SECRET")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            raw = value.get_secret_value()
            try:
                decoded = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                decoded = b""
            # Checked here, at start: a secret that does not decode would fail every delivery.
            if not raw.startswith("whsec_") or len(decoded) < 24:
                raise ValueError("must look like whsec_<base64 of at least 24 random bytes>")
            return value
        return None

    @model_validator(mode="after")
    def _placeholders(self) -> Settings:
        for key in self.GATEWAY_API_KEYS:
            if key.get_secret_value() in {"changeme", "change-me", "secret"}:
                raise ValueError("GATEWAY_API_KEYS holds a placeholder key: generate a real one")
        return self

    @cached_property
    def api_keys(self) -> frozenset[str]:
        return frozenset(key.get_secret_value() for key in self.GATEWAY_API_KEYS)

    @property
    def callback_url(self) -> str:
        return f"{self.GATEWAY_PUBLIC_URL}/callbacks/plivo"
