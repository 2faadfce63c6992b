"""Settings are checked at construction: each bad value is one error naming its variable, saying what
is expected with an example; several bad values are several errors at once; rules across settings hold;
.env.example works copied as-is; variables that look like settings but are none are found."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError

from gateway.settings import Settings, closest_setting, example, unknown_names

ROOT = Path(__file__).resolve().parents[2]


def errors(**values: Any) -> dict[str, str]:
    """{variable: message} of the errors Settings raises for these values (none: {})."""
    try:
        Settings(_env_file=None, **values)  # type: ignore[call-arg]
    except ValidationError as exc:
        found = {}
        for error in exc.errors():
            assert len(error["loc"]) == 1, error  # one line per variable, named by it
            found[str(error["loc"][0])] = error["msg"]
        return found
    return {}


BAD = [
    ("REDIS_URL", "notaurl", "redis://, rediss:// (TLS) or unix://"),
    ("REDIS_URL", "http://127.0.0.1:6379/0", "redis://, rediss:// (TLS) or unix://"),
    ("REDIS_URL", "redis://", "needs a host"),
    ("REDIS_URL", "redis://127.0.0.1:port/0", "does not parse"),
    ("REDIS_URL", "redis://127.0.0.1:6379/zero", "database"),
    ("REDIS_URL", "unix://", "socket's path"),
    ("LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
    ("LOG_FORMAT", "yaml", "'json' or 'console'"),
    ("GATEWAY_KEY_PREFIX", "my prefix:", "letters, digits"),
    ("GATEWAY_KEY_PREFIX", "x" * 65, "1-64"),
    ("REDIS_SENTINELS", "s1:26379,s2", "'s2' is not host:port"),
    ("REDIS_SENTINELS", "s1:70000", "port 1-65535"),
    ("REDIS_SENTINEL_MASTER", "my master", "without spaces"),
    ("REDIS_WAIT_REPLICAS", "-1", "greater than or equal to 0"),
    ("REDIS_WAIT_TIMEOUT", "0", "greater than 0"),
    ("PLIVO_AUTH_ID", "MA-123", "letters and digits"),
    ("PLIVO_API_URL", "api.plivo.com", "http:// or https://"),
    ("PLIVO_API_URL", "https://api.plivo.com/?x=1", "without ?query"),
    ("GATEWAY_PUBLIC_URL", "https://gw.example.com/#top", "without #fragment"),
    ("GATEWAY_PUBLIC_URL", "http://", "with a host"),
    ("GATEWAY_PUBLIC_URL", "https://gw.example.com:99999", "port"),
    ("UPSTREAM_PROXY", "proxy.internal:3128", "http://, https:// or socks5://"),
    ("UPSTREAM_PROXY", "ftp://proxy.internal", "http://, https:// or socks5://"),
    ("UPSTREAM_CONNECT_TIMEOUT", "inf", "finite number"),
    ("UPSTREAM_READ_TIMEOUT", "nan", "finite number"),
    ("UPSTREAM_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("UPSTREAM_RATE_LIMIT", "-5", "greater than or equal to 0"),
    ("GATEWAY_API_KEYS", "changeme", "placeholder"),
    ("GATEWAY_API_KEYS", "good-key-123456,bad key", "without spaces"),
    ("GATEWAY_VERIFY_SIGNATURES", "maybe", "valid boolean"),
    ("GATEWAY_SIGNATURE_VERSIONS", "v1", "'v3' or 'v2'"),
    ("GATEWAY_ADMIN_PORT", "0", "greater than or equal to 1"),
    ("GATEWAY_ADMIN_PORT", "65536", "less than or equal to 65535"),
    ("WORKER_METRICS_PORT", "70000", "less than or equal to 65535"),
    ("GATEWAY_MAX_CONNECTIONS", "0", "greater than 0"),
    ("GATEWAY_MAX_BODY_BYTES", "1.5", "valid integer"),
    ("GATEWAY_DEFAULT_TIMEOUT", "-1", "greater than 0"),
    ("GATEWAY_UNMATCHED_GRACE", "soon", "valid integer"),
    ("GATEWAY_WEBHOOK_SECRET", "not-a-whsec-secret", "whsec_"),
    ("GATEWAY_RETRY_SCHEDULE", "0,5,-1", "none negative"),
    ("GATEWAY_RETRY_SCHEDULE", "0,five", "item 2"),
    ("GATEWAY_WEBHOOK_ALLOW_CIDRS", "10.0.0.0/8,internal", "'internal' is not an IPv4 or IPv6 network"),
    ("GATEWAY_BREAKER_FAILURE_RATE", "1.5", "less than or equal to 1"),
    ("WORKER_CONCURRENCY", "0", "greater than 0"),
    ("WORKER_HEARTBEAT_INTERVAL", "0", "greater than 0"),
    ("WORKER_SHUTDOWN_GRACE", "-1", "greater than or equal to 0"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD, ids=[f"{n}={v[:20]}" for n, v, _ in BAD])
def test_a_bad_value_is_one_error_naming_the_variable_with_an_example(
    name: str, value: str, expected: str
) -> None:
    found = errors(**{name: value})
    assert list(found) == [name]
    assert expected in found[name]
    assert f"for example {name}={example(name)}" in found[name]


def test_the_environment_is_checked_like_keyword_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "notaurl")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert {e["loc"] for e in caught.value.errors()} == {("REDIS_URL",), ("LOG_LEVEL",)}


def test_several_bad_values_are_reported_at_once() -> None:
    found = errors(
        REDIS_URL="notaurl",
        LOG_LEVEL="LOUD",
        GATEWAY_DEFAULT_TIMEOUT="700000",
        WORKER_CONCURRENCY="0",
        UPSTREAM_PROXY="nope",
        WORKER_HEARTBEAT_INTERVAL="30",
    )
    assert set(found) == {
        "REDIS_URL",
        "LOG_LEVEL",
        "GATEWAY_MAX_TIMEOUT",
        "WORKER_CONCURRENCY",
        "UPSTREAM_PROXY",
        "WORKER_HEARTBEAT_TTL",
    }


def test_default_timeout_above_max_timeout_is_refused_naming_both() -> None:
    found = errors(GATEWAY_DEFAULT_TIMEOUT="700000")  # above the default maximum, 604800
    assert list(found) == ["GATEWAY_MAX_TIMEOUT"]
    assert (
        "GATEWAY_DEFAULT_TIMEOUT (700000) is above GATEWAY_MAX_TIMEOUT (604800)"
        in found["GATEWAY_MAX_TIMEOUT"]
    )
    assert "GATEWAY_MAX_TIMEOUT" in errors(GATEWAY_DEFAULT_TIMEOUT="60", GATEWAY_MAX_TIMEOUT="30")
    assert errors(GATEWAY_DEFAULT_TIMEOUT="60", GATEWAY_MAX_TIMEOUT="60") == {}


def test_heartbeat_ttl_must_exceed_the_interval() -> None:
    found = errors(WORKER_HEARTBEAT_INTERVAL="15")  # the default TTL is 15
    assert list(found) == ["WORKER_HEARTBEAT_TTL"]
    assert "WORKER_HEARTBEAT_INTERVAL" in found["WORKER_HEARTBEAT_TTL"]
    assert "WORKER_HEARTBEAT_TTL" in errors(WORKER_HEARTBEAT_INTERVAL="5", WORKER_HEARTBEAT_TTL="4")
    assert errors(WORKER_HEARTBEAT_INTERVAL="0.1", WORKER_HEARTBEAT_TTL="1") == {}


def test_worker_metrics_port_and_admin_port_differ_when_both_are_set() -> None:
    found = errors(GATEWAY_ADMIN_PORT="9100", WORKER_METRICS_PORT="9100")
    assert list(found) == ["WORKER_METRICS_PORT"]
    assert "GATEWAY_ADMIN_PORT" in found["WORKER_METRICS_PORT"]
    assert errors(GATEWAY_ADMIN_PORT="9100", WORKER_METRICS_PORT="9101") == {}
    assert errors(GATEWAY_ADMIN_PORT="9100") == {}  # WORKER_METRICS_PORT=0: off, no conflict


def test_a_rule_across_settings_is_reported_next_to_an_unrelated_bad_value() -> None:
    found = errors(LOG_LEVEL="LOUD", GATEWAY_DEFAULT_TIMEOUT="60", GATEWAY_MAX_TIMEOUT="30")
    assert set(found) == {"LOG_LEVEL", "GATEWAY_MAX_TIMEOUT"}


def test_a_rule_across_settings_waits_for_both_values_to_be_valid() -> None:
    found = errors(GATEWAY_DEFAULT_TIMEOUT="soon", GATEWAY_MAX_TIMEOUT="30")
    assert list(found) == ["GATEWAY_DEFAULT_TIMEOUT"]


@pytest.mark.parametrize(
    ("name", "value", "parsed"),
    [
        ("LOG_LEVEL", "debug", "DEBUG"),
        ("LOG_LEVEL", " Warning ", "WARNING"),
        ("LOG_FORMAT", "Console", "console"),
        ("REDIS_URL", "rediss://:pw@redis.internal:6380/2", "rediss://:pw@redis.internal:6380/2"),
        ("REDIS_URL", "unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("REDIS_URL", "redis://127.0.0.1", "redis://127.0.0.1"),
        ("GATEWAY_KEY_PREFIX", "{cg}:", "{cg}:"),
        ("UPSTREAM_PROXY", "http://user:pw@proxy.internal:3128", "http://user:pw@proxy.internal:3128"),
        ("GATEWAY_PUBLIC_URL", "https://gw.example.com/base/", "https://gw.example.com/base"),
        ("REDIS_SENTINELS", "[::1]:26379, s2:26379", ["[::1]:26379", "s2:26379"]),
    ],
)
def test_valid_spellings_are_accepted(name: str, value: str, parsed: object) -> None:
    settings = Settings(_env_file=None, **{name: value})  # type: ignore[call-arg]
    assert getattr(settings, name) == parsed


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_has_a_valid_example(name: str) -> None:
    value = example(name)
    assert value, f"{name}: an empty default needs Field(examples=[...])"
    assert errors(**{name: value}) == {}


def test_secrets_and_passwords_are_not_echoed() -> None:
    secret = "whsec_" + "definitely-not-base64!"
    assert secret not in errors(GATEWAY_WEBHOOK_SECRET=secret)["GATEWAY_WEBHOOK_SECRET"]
    assert "hunter2" not in errors(REDIS_URL="redis://:hunter2@host:port/0")["REDIS_URL"]
    assert "hunter2" not in errors(UPSTREAM_PROXY="ftp://u:hunter2@proxy")["UPSTREAM_PROXY"]
    assert "bad key" not in errors(GATEWAY_API_KEYS="bad key")["GATEWAY_API_KEYS"]
    assert "'LOUD'" in errors(LOG_LEVEL="LOUD")["LOG_LEVEL"]  # plain values are shown


def test_env_example_copied_as_dot_env_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "a-real-token-from-the-console")
    monkeypatch.setenv("GATEWAY_API_KEYS", "cgk_" + "k" * 32)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    defaults = Settings(_env_file=None, PLIVO_AUTH_TOKEN="x", GATEWAY_API_KEYS="y")  # type: ignore[call-arg]
    for name in Settings.model_fields.keys() - {"PLIVO_AUTH_TOKEN", "GATEWAY_API_KEYS"}:
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.UPSTREAM_PROXY is None  # `UPSTREAM_PROXY=` is unset, not the empty URL
    assert settings.GATEWAY_ADMIN_PORT is None
    assert settings.api_keys == {"cgk_" + "k" * 32}
    assert unknown_names({}, dotenv_values(tmp_path / ".env")) == []


def test_unknown_names_finds_typos_in_the_environment_and_the_dotenv_file() -> None:
    environ = {
        "GATEWAY_API_KEY": "k",  # typo of GATEWAY_API_KEYS
        "log_level": "DEBUG",  # settings are case-sensitive
        "WORKER_CONCURRENCY": "8",
        "REDIS_PASSWORD": "pw",  # deploy/docker-compose.yml's, not ours
        "PATH": "/usr/bin",
        "OTEL_SERVICE_NAME": "gw",
    }
    dotenv: dict[str, str | None] = {"PLIVO_AUTHTOKEN": "t", "LOG_LEVEL": "INFO", "HOME": "/root"}
    assert unknown_names(environ, dotenv) == ["GATEWAY_API_KEY", "HOME", "PLIVO_AUTHTOKEN", "log_level"]
    assert closest_setting("GATEWAY_API_KEY") == "GATEWAY_API_KEYS"
    assert closest_setting("log_level") == "LOG_LEVEL"
    assert closest_setting("PLIVO_AUTHTOKEN") == "PLIVO_AUTH_TOKEN"
    assert closest_setting("HOME") is None


def test_unknown_names_reads_the_process_environment_and_dot_env_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("GATEWAY_RETRY_SCHEDUEL=0,1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "5")
    assert {"GATEWAY_RETRY_SCHEDUEL", "UPSTREAM_TIMEOUT"} <= set(unknown_names())
