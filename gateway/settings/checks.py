"""The rules every setting is checked against (per field, then across fields), as a base class
of ``gateway.settings.Settings``, and the sentences that explain a broken one."""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import re
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings
from redis.asyncio.connection import parse_url

SignatureVersion = Literal["v3", "v2"]
SIGNATURE_VERSIONS: tuple[SignatureVersion, ...] = ("v3", "v2")
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "secret"})
KEY_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")
# Environment variables with these prefixes are ours: one that is not a setting is a typo.
OWN_PREFIXES = ("GATEWAY_", "PLIVO_", "WORKER_", "REDIS_", "UPSTREAM_")
# ... except these, read by other programs next to the gateway.
NOT_SETTINGS = frozenset(
    {
        "REDIS_PASSWORD",  # deploy/docker-compose.yml substitutes it into REDIS_URL
    }
)
# Never echoed in an error message: they may carry a password.
_NO_ECHO = frozenset({"REDIS_URL", "UPSTREAM_PROXY", "DATABASE_URL"})


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _conflict(message: str) -> PydanticCustomError:
    """A cross-field problem: reported as is (it names both variables), without an example."""
    return PydanticCustomError("settings_conflict", "{message}", {"message": message})


class SettingsChecks(BaseSettings):
    """The validators of ``Settings``; its fields are declared there (``check_fields=False``)."""

    # --- parsing -----------------------------------------------------------------------------
    @field_validator(
        "GATEWAY_API_KEYS",
        "REDIS_SENTINELS",
        "GATEWAY_RETRY_SCHEDULE",
        "GATEWAY_WEBHOOK_ALLOW_CIDRS",
        mode="before",
        check_fields=False,
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("GATEWAY_SIGNATURE_VERSIONS", mode="before", check_fields=False)
    @classmethod
    def _versions_csv(cls, value: object) -> object:
        value = _split_csv(value)
        return [v.lower() for v in value] if isinstance(value, list) else value

    @field_validator("LOG_LEVEL", mode="before", check_fields=False)
    @classmethod
    def _level_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("LOG_FORMAT", mode="before", check_fields=False)
    @classmethod
    def _format_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # --- one field ---------------------------------------------------------------------------
    @field_validator("REDIS_URL", check_fields=False)
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// (TLS) or unix:// URL")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket's path, as in unix:///run/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("needs a host, as in redis://HOST:6379/0")
        db = parse_qs(parts.query).get("db", [parts.path.lstrip("/") if parts.scheme != "unix" else ""])
        if db[0] and not db[0].isdigit():
            raise ValueError("the database (after the last /) must be a number, as in redis://HOST:6379/0")
        try:
            parse_url(value)  # what the clients will do with it: the port, the query options
        except ValueError as exc:
            raise ValueError(f"does not parse: {exc}") from None
        return value

    @field_validator("DATABASE_URL", check_fields=False)
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must be a postgresql:// URL, as in postgresql://USER:PASSWORD@HOST:5432/DATABASE"
            )
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("needs a host, as in postgresql://USER:PASSWORD@HOST:5432/DATABASE")
        return value

    @field_validator("GATEWAY_KEY_PREFIX", check_fields=False)
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not KEY_PREFIX_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits or _ - . : { }, as it starts every Redis key")
        return value

    @field_validator("REDIS_SENTINEL_MASTER", check_fields=False)
    @classmethod
    def _master_name(cls, value: str) -> str:
        if not value or any(char.isspace() for char in value):
            raise ValueError("must be the master's name as the sentinels know it, without spaces")
        return value

    @field_validator("PLIVO_AUTH_ID", check_fields=False)
    @classmethod
    def _auth_id(cls, value: str) -> str:
        if value and not (value.isascii() and value.isalnum()):
            raise ValueError("must be letters and digits only: the Auth ID shown in the Plivo console")
        return value

    @field_validator("REDIS_SENTINELS", check_fields=False)
    @classmethod
    def _sentinels_valid(cls, value: list[str]) -> list[str]:
        for hostport in value:
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{hostport!r} is not host:port (port 1-65535)")
        return value

    @field_validator("GATEWAY_WEBHOOK_ALLOW_CIDRS", check_fields=False)
    @classmethod
    def _cidrs_valid(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IPv4 or IPv6 network (address/prefix)") from None
        return value

    @field_validator("GATEWAY_RETRY_SCHEDULE", check_fields=False)
    @classmethod
    def _schedule_valid(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("needs at least one delay, none negative")
        return value

    @field_validator("GATEWAY_PUBLIC_URL", "PLIVO_API_URL", check_fields=False)
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
        except ValueError:
            raise ValueError("has a port that is not a number in 1-65535") from None
        if parts.fragment:
            raise ValueError("must be a base URL, without #fragment (a fragment is never sent)")
        # The API paths are appended to PLIVO_API_URL. GATEWAY_PUBLIC_URL keeps a query, which
        # the receiver's signature check is written (and tested) to handle.
        if parts.query and info.field_name == "PLIVO_API_URL":
            raise ValueError("must be a base URL, without ?query")
        return value.rstrip("/")

    @field_validator("UPSTREAM_PROXY", check_fields=False)
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
            raise ValueError("must be an http://, https:// or socks5:// URL with a host")
        if parts.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            raise ValueError("a socks5:// proxy needs the socks extra: pip install 'httpx[socks]'")
        return value

    @field_validator("GATEWAY_API_KEYS", check_fields=False)
    @classmethod
    def _keys_valid(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            raw = key.get_secret_value()
            if raw in PLACEHOLDER_KEYS:
                raise ValueError("holds a placeholder key: generate a real one")
            if not raw.isascii() or not raw.isprintable() or " " in raw:
                raise ValueError("a key must be printable ASCII without spaces (it is sent in a header)")
        return value

    @field_validator("GATEWAY_WEBHOOK_SECRET", check_fields=False)
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

    # --- cross-field: the later field checks the earlier one ----------------------------------
    @field_validator("GATEWAY_MAX_TIMEOUT", check_fields=False)
    @classmethod
    def _max_timeout_covers_default(cls, value: int, info: ValidationInfo) -> int:
        default = info.data.get("GATEWAY_DEFAULT_TIMEOUT")
        if default is not None and default > value:
            raise _conflict(
                f"GATEWAY_DEFAULT_TIMEOUT ({default}) is above GATEWAY_MAX_TIMEOUT ({value}): "
                "lower the default or raise the maximum"
            )
        return value

    @field_validator("WORKER_HEARTBEAT_TTL", check_fields=False)
    @classmethod
    def _ttl_exceeds_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("WORKER_HEARTBEAT_INTERVAL")
        if interval is not None and value <= interval:
            raise _conflict(
                f"WORKER_HEARTBEAT_TTL ({value:g}) must be above WORKER_HEARTBEAT_INTERVAL ({interval:g}), "
                "or a live worker counts as gone between two heartbeats (e.g. 3 x the interval)"
            )
        return value

    @field_validator("WORKER_METRICS_PORT", check_fields=False)
    @classmethod
    def _metrics_port_is_not_the_admin_port(cls, value: int, info: ValidationInfo) -> int:
        admin = info.data.get("GATEWAY_ADMIN_PORT")
        if value and value == admin:
            raise _conflict(
                f"WORKER_METRICS_PORT and GATEWAY_ADMIN_PORT are both {value}: on one machine the "
                "second process to start could not bind it; choose two ports"
            )
        return value

    # --- every field: say what was expected, with an example --------------------------------
    @field_validator("*", mode="wrap")
    @classmethod
    def _explain(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """Defined last, so it wraps the validators above too."""
        try:
            return handler(value)
        except ValidationError as exc:
            name = info.field_name or ""
            raise PydanticCustomError(
                "invalid_setting", "{problem}", {"problem": explain(cls, name, value, exc)}
            ) from None


def explain(model: type[BaseSettings], name: str, value: object, exc: ValidationError) -> str:
    """One sentence for the problems of one setting: what is wrong, what was given, an example."""
    errors = exc.errors(include_url=False)
    if len(errors) == 1 and errors[0]["type"] == "settings_conflict":
        return str(errors[0]["msg"])
    problems = []
    for error in errors:
        msg = str(error["ctx"]["error"]) if error["type"] == "value_error" else str(error["msg"])
        msg = msg.removeprefix("Input ")
        where = [str(part) for part in error["loc"] if isinstance(part, int)]
        problems.append(f"item {int(where[0]) + 1}: {msg}" if where else msg)
    text = "; ".join(problems)
    field = model.model_fields.get(name)
    secret = field is not None and "SecretStr" in str(field.annotation)
    if isinstance(value, str) and not secret and name not in _NO_ECHO:
        text += f" (got {value!r})"
    return f"{text}; for example {name}={example_of(model, name)}"


def env_text(value: object) -> str:
    """A value as it is written in the environment or .env (a secret or None as empty)."""
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(env_text(item) for item in value)
    return str(value)


def example_of(model: type[BaseSettings], name: str) -> str:
    """A valid value of a setting: its documented example, else its default."""
    field = model.model_fields[name]
    if field.examples:
        return str(field.examples[0])
    return env_text(field.get_default(call_default_factory=True))
