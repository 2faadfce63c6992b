"""Settings as the commands read them: every problem at once, one `NAME: problem` line each;
where the process runs from (Redis, database), passwords masked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway import settings as settings_module
from gateway.settings import Settings

Problem = tuple[str, str]  # (the variable or option at fault, what is wrong with it)
Check = Callable[[Settings], list[Problem]]


def _problem(error: ErrorDetails) -> Problem:
    """A pydantic error as (environment variable name, message); values are never shown."""
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    loc = error["loc"]
    if not loc:  # a rule across fields: its message names them
        return "", message
    where = "".join(f" item {part + 1}" if isinstance(part, int) else "" for part in loc[1:])
    return str(loc[0]), f"{where.strip()}: {message}" if where else message


def _defaults_for(errors: Sequence[ErrorDetails]) -> Settings | None:
    """The settings with every invalid variable at its default, so that a command's own
    requirements can be checked too (all problems at once); None if a rule across fields failed."""
    if any(not e["loc"] for e in errors):
        return None
    names = {str(e["loc"][0]) for e in errors}
    fields = Settings.model_fields
    values: dict[str, Any] = {
        name: fields[name].get_default(call_default_factory=True) for name in names if name in fields
    }
    try:
        return Settings(**values)
    except ValidationError:
        return None


def fail(problems: Sequence[Problem], heading: str = "invalid configuration") -> NoReturn:
    """Report every problem, one ``NAME: message`` line each, and exit 2."""
    lines = [f"  {name}: {message}" if name else f"  {message}" for name, message in problems]
    typer.echo(f"{heading}:\n" + "\n".join(lines), err=True)
    raise typer.Exit(2)


def load_settings(*checks: Check, warn_unknown: bool = True) -> Settings:
    """The settings from the environment and ``.env``; ``checks`` are a command's own
    requirements. Any problem, invalid values and unmet requirements alike, is reported (all of
    them, one line each) and the command exits 2. Variables that look like settings but are
    none (typos) are warned about unless ``warn_unknown`` is false."""
    settings: Settings | None
    try:
        settings, problems = Settings(), []
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        settings = _defaults_for(exc.errors())
    if settings is not None:
        invalid = {name for name, _ in problems}
        for check in checks:
            problems += [p for p in check(settings) if p[0] not in invalid]
    if warn_unknown:
        _warn_unknown_names()  # before failing too: a typo is often why a requirement is unmet
    if problems or settings is None:
        fail(problems)
    return settings


def _warn_unknown_names() -> None:
    """Warn about variables that look like settings but are none: a typo keeps a default."""
    for name in settings_module.unknown_names():
        meant = settings_module.closest_setting(name)
        hint = f" (did you mean {meant}?)" if meant else ""
        typer.echo(f"warning: {name} is not a setting of callback-gateway{hint}; ignored", err=True)


def redis_url_problems(settings: Settings) -> list[Problem]:
    """A REDIS_URL redis-py cannot use fails at start, not at first connection."""
    from redis.asyncio.connection import parse_url

    try:
        parse_url(settings.REDIS_URL)
    except ValueError as exc:
        return [("REDIS_URL", f"not a Redis URL ({exc}); expected redis://[[user]:password@]host:port/db")]
    return []


def worker_redis_url_problems(settings: Settings) -> list[Problem]:
    """The worker's job queue (arq) reads REDIS_URL itself, and understands less of it."""
    problems = redis_url_problems(settings)
    if problems:
        return problems
    from arq.connections import RedisSettings

    try:
        RedisSettings.from_dsn(settings.REDIS_URL)
    except (ValueError, RuntimeError) as exc:
        return [("REDIS_URL", f"the worker's job queue (arq) cannot use it: {exc}")]
    return []


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or a ``password`` parameter) as ``****``."""
    parts = urlsplit(url)
    if parts.password is None and "password" not in parts.query:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:****@{hostport}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, "****" if k == "password" else v) for k, v in pairs], safe="*")
    # Put together by hand: urlunsplit would turn unix:///path into unix:/path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def state_in_use(settings: Settings) -> dict[str, str]:
    """Which Redis (and database) this process uses, passwords masked, for its start log line."""
    used = {"redis": mask_url(settings.REDIS_URL)}
    if "REDIS_URL" not in settings.model_fields_set:
        used["redis_from"] = "default (REDIS_URL is not set)"
    if settings.REDIS_SENTINELS:
        used["redis_sentinels"] = ",".join(settings.REDIS_SENTINELS)
        used["redis_sentinel_master"] = settings.REDIS_SENTINEL_MASTER
    if settings.DATABASE_URL is not None:
        used["database"] = mask_url(settings.DATABASE_URL.get_secret_value())
    return used


def database_problems(settings: Settings) -> list[Problem]:
    """``serve`` and ``worker`` keep history in PostgreSQL: without one they do not start."""
    if settings.DATABASE_URL is None:
        return [
            (
                "DATABASE_URL",
                "needed: the PostgreSQL that keeps history, as "
                "postgresql://USER:PASSWORD@HOST:5432/DATABASE (`callback-gateway dev` starts its own)",
            )
        ]
    return []
