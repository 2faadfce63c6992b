"""Turn Plivo's asynchronous API callbacks into reliable, signed, retried events.

Your services submit requests to the gateway; it calls Plivo with its own callback_url, verifies
and stores each callback, matches it with its request and delivers the outcome to webhooks and
arq queues.

New here? Run `callback-gateway dev` (everything on one machine, no outside service) and follow
docs/walkthrough.md. Settings come from the environment and from a .env file in the working
directory (.env.example lists them all); every command reports all invalid settings at once,
one `NAME: problem` line each, and exits with status 2.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Annotated, Any, TypeVar

import typer

from gateway.cli.config import (
    Check,
    Problem,
    database_problems,
    load_settings,
    mask_url,
    redis_url_problems,
    state_in_use,
    worker_redis_url_problems,
)
from gateway.cli.process import GC_THRESHOLDS, app_from_env, loop_factory, tune_gc
from gateway.infra import logs
from gateway.settings import Settings

__all__ = [
    "GC_THRESHOLDS",
    "app_from_env",
    "cli",
    "load_settings",
    "main",
    "mask_url",
    "state_in_use",
    "tune_gc",
]

# Help renders as plain text (click's formatter), wrapped to the terminal and never cut: rich's
# tables truncated long option texts at 80 columns and showed types such as ``<bool>``.
cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help=__doc__,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def tooling(module: str, command_name: str) -> Any:
    """A module of the developer tooling (``tooling/``: ``dev``, ``sandbox``, ``bench``), which the
    Docker image leaves out: where it is missing, one line says so instead of a traceback."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "tooling":
            raise
        name = command_name
        typer.echo(
            f"`callback-gateway {name}` is developer tooling, not installed here (the Docker image "
            "ships the runtime only): run it from a source checkout (`make dev`)",
            err=True,
        )
        raise typer.Exit(2) from None


def command(func: F) -> F:
    """A subcommand whose summary in the command list is the first line of its docstring, whole
    (click cuts a summary it derives itself to fit the terminal)."""
    summary = (func.__doc__ or "").strip().splitlines()[0]
    return cli.command(short_help=summary)(func)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"callback-gateway {metadata.version('callback-gateway')}")
        raise typer.Exit()


@cli.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


def _serve_requirements(host: str, port: int) -> Check:
    def check(settings: Settings) -> list[Problem]:
        problems: list[Problem] = []
        if not settings.api_keys:
            problems.append(("GATEWAY_API_KEYS", "serve needs at least one (comma-separated bearer keys)"))
        if settings.GATEWAY_VERIFY_SIGNATURES and not settings.PLIVO_AUTH_TOKEN.get_secret_value():
            problems.append(
                (
                    "PLIVO_AUTH_TOKEN",
                    "needed to verify callback signatures (GATEWAY_VERIFY_SIGNATURES=false turns "
                    "verification off, for debugging only)",
                )
            )
        if port == settings.GATEWAY_ADMIN_PORT:
            problems.append(("GATEWAY_ADMIN_PORT", f"must differ from --port ({port})"))
        problems += _tls_problems(settings) + redis_url_problems(settings) + database_problems(settings)
        if not problems:  # only worth trying once the configuration is right
            problems += _unbindable(host, [port, settings.GATEWAY_ADMIN_PORT])
        return problems

    return check


def _tls_problems(settings: Settings) -> list[Problem]:
    cert, key = settings.GATEWAY_TLS_CERT_FILE, settings.GATEWAY_TLS_KEY_FILE
    problems: list[Problem] = []
    for name, path, other in (
        ("GATEWAY_TLS_CERT_FILE", cert, "GATEWAY_TLS_KEY_FILE"),
        ("GATEWAY_TLS_KEY_FILE", key, "GATEWAY_TLS_CERT_FILE"),
    ):
        if not path and (cert or key):
            problems.append((name, f"set it too ({other} is set), or neither"))
        elif path and not os.path.isfile(path):
            problems.append((name, f"no such file {path}"))
    return problems


def _unbindable(
    host: str, ports: Sequence[int | None], names: Sequence[str] = ("--port", "GATEWAY_ADMIN_PORT")
) -> list[Problem]:
    """Ports that cannot be listened on (in use, or privileged), checked before anything starts."""
    from gateway.api import serving

    problems: list[Problem] = []
    for option, port in zip(names, ports, strict=True):
        if port is None:
            continue
        try:
            serving.bind(host, port).close()
        except OSError as exc:
            problems.append((option, f"cannot listen on {host}:{port}: {exc.strerror or exc}"))
    return problems


HostOption = Annotated[
    str, typer.Option(metavar="HOST", help="Interface to listen on (0.0.0.0 for every IPv4 one).")
]


@command
def serve(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port of the API and callback receiver.")] = 8000,
    workers: Annotated[
        int, typer.Option(metavar="N", min=1, help="Server processes sharing the port(s).")
    ] = 1,
) -> None:
    """Run the API and the callback receiver (uvicorn).

    Needs GATEWAY_API_KEYS, PLIVO_AUTH_TOKEN (to verify callback signatures) and a reachable
    REDIS_URL (while Redis is down it keeps trying and /readyz answers 503). With
    GATEWAY_ADMIN_PORT set, the API, /docs and /metrics move to that second port and this one
    serves only the receiver and health. HTTPS with GATEWAY_TLS_CERT_FILE and
    GATEWAY_TLS_KEY_FILE. Logs one serve_listening line with its addresses and Redis.
    """
    from gateway.api import serving
    from gateway.infra import tls

    settings = load_settings(_serve_requirements(host, port))
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    log = logs.get("gateway.cli")
    scheme = "https" if settings.GATEWAY_TLS_CERT_FILE else "http"
    address = f"[{host}]" if ":" in host else host
    log.info(
        "serve_listening",
        listen=f"{scheme}://{address}:{port}",
        admin=f"{scheme}://{address}:{settings.GATEWAY_ADMIN_PORT}" if settings.GATEWAY_ADMIN_PORT else None,
        callback_url=settings.callback_url,
        workers=workers,
        **state_in_use(settings),
    )
    if not settings.GATEWAY_VERIFY_SIGNATURES:
        log.warning("signature_verification_disabled")
    serving.run(
        settings,
        host,
        port,
        workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        **tls.uvicorn_options(settings),
    )


@command
def worker() -> None:
    """Run the worker that correlates callbacks, fans out events and delivers them.

    Also times requests out and sweeps. While its Redis (REDIS_URL) cannot be reached at start
    it waits, logging one redis_unavailable line per attempt, as it does when Redis goes away
    later; a Redis that refuses its password ends it (exit 1). WORKER_METRICS_PORT serves its
    Prometheus metrics. Logs one worker_starting line with its queue, metrics port and Redis.
    """
    from redis.exceptions import RedisError

    from workers.main import queue_name, run_worker

    settings = load_settings(worker_redis_url_problems, database_problems)
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    metrics_port = settings.WORKER_METRICS_PORT
    logs.get("gateway.cli").info(
        "worker_starting",
        queue=queue_name(settings),
        metrics=f"http://0.0.0.0:{metrics_port}/metrics" if metrics_port else "off (WORKER_METRICS_PORT)",
        **state_in_use(settings),
    )
    tune_gc()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run_worker(settings))
    except (RedisError, OSError) as exc:
        typer.echo(f"worker: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


@command
def migrate() -> None:
    """Apply the PostgreSQL migrations (DATABASE_URL) and create today's partitions.

    ``serve`` and ``worker`` do the same at start-up; all of them take an advisory lock first, so
    any number of them starting together apply each migration once. Prints what it applied.
    """
    from gateway.history import migrate as migrations

    settings = load_settings(database_problems)
    assert settings.DATABASE_URL is not None  # database_problems

    async def run(url: str) -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            applied = await migrations.migrate(conn)
            version = await migrations.current_version(conn)
        finally:
            await conn.close()
        done = [f"applied {m.version:04d}_{m.name}" for m in applied]
        return [*done, f"schema at version {version}"]

    try:
        lines = asyncio.run(run(settings.DATABASE_URL.get_secret_value()))
    except (TimeoutError, OSError) as exc:
        typer.echo(f"migrate: cannot reach DATABASE_URL: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # asyncpg's errors: auth, missing database, ...
        typer.echo(f"migrate: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in lines:
        typer.echo(line)


@command
def sandbox(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8001,
) -> None:
    """Run a local stand-in for Plivo's API that calls callback_url back, signed.

    Accepts requests for PLIVO_AUTH_ID with PLIVO_AUTH_TOKEN (HTTP Basic), answers
    "async api spawned" and then sends the result to callback_url signed with that token.
    POST /_sandbox/config changes how it behaves (delay, callback_first, duplicates, signature,
    replies, encoding, status_callbacks; docs/walkthrough.md); GET /_sandbox/requests and
    GET /_sandbox/callbacks show what it received and sent.
    """
    import uvicorn

    create_sandbox = tooling("tooling.sandbox", "sandbox").create_sandbox

    def credentials(settings: Settings) -> list[Problem]:
        needed = {
            "PLIVO_AUTH_ID": settings.PLIVO_AUTH_ID,
            "PLIVO_AUTH_TOKEN": settings.PLIVO_AUTH_TOKEN.get_secret_value(),
        }
        return [(name, "the sandbox accepts only these: set it") for name, v in needed.items() if not v]

    settings = load_settings(credentials)
    token = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    uvicorn.run(
        create_sandbox(settings.PLIVO_AUTH_ID, token),
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
    )


@command
def dev(
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port of the gateway (API and receiver) on 127.0.0.1.")
    ] = 8000,
    worker_metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Also serve the worker's Prometheus metrics on this port (default: "
            "WORKER_METRICS_PORT if set, else off).",
        ),
    ] = None,
) -> None:
    """Everything on one machine: embedded Redis, Plivo sandbox, API/receiver and worker.

    Checks its ports first, then starts the lot and prints a banner with the URLs, a generated
    API key, the sandbox's PLIVO_AUTH_ID and token, the webhook secret, the sandbox's knobs and a
    ready curl line (docs/walkthrough.md goes on from there). Uses REDIS_URL only when it is set
    in the environment; otherwise starts its own Redis. Ctrl-C stops everything.
    """
    run_dev = tooling("tooling.dev", "dev").run_dev

    def requirements(settings: Settings) -> list[Problem]:
        metrics_port = settings.WORKER_METRICS_PORT if worker_metrics_port is None else worker_metrics_port
        problems = _unbindable("127.0.0.1", [port, settings.GATEWAY_ADMIN_PORT])
        if metrics_port:
            name = "WORKER_METRICS_PORT" if worker_metrics_port is None else "--worker-metrics-port"
            problems += _unbindable("0.0.0.0", [metrics_port], [name])  # noqa: S104
        if os.environ.get("REDIS_URL"):  # dev uses it only from the environment
            problems += worker_redis_url_problems(settings)
        return problems

    settings = load_settings(requirements)
    metrics_port = settings.WORKER_METRICS_PORT if worker_metrics_port is None else worker_metrics_port
    sys.exit(run_dev(settings, port, worker_metrics_port=metrics_port))


@command
def bench(
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A tiny run of a few seconds: proves it works, figures meaningless."),
    ] = False,
    phases: Annotated[
        str | None,
        typer.Option(
            metavar="LIST",
            help="Comma-separated phases to run, of ingest, baselines, e2e, delivery, memory, history [all].",
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Length of each saturated run [8].")
    ] = None,
    warmup: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Warm-up before each saturated run [1].")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(metavar="N", help="Connections for the saturated runs [64].")
    ] = None,
    fixed_rate: Annotated[
        int | None,
        typer.Option(metavar="PER_S", help="Callbacks per second for the unsaturated latency figure [1000]."),
    ] = None,
    fixed_duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Length of the run at --fixed-rate [5].")
    ] = None,
    e2e_rate: Annotated[
        int | None,
        typer.Option(metavar="PER_S", help="Callbacks per second for the end-to-end latency figure [500]."),
    ] = None,
    e2e_duration: Annotated[
        float | None, typer.Option(metavar="SECONDS", help="Length of the run at --e2e-rate [8].")
    ] = None,
    deliveries: Annotated[
        int | None, typer.Option(metavar="N", help="Webhook deliveries for the throughput figure [10000].")
    ] = None,
    pending: Annotated[
        int | None, typer.Option(metavar="N", help="Pending requests for the memory figure [100000].")
    ] = None,
    sweep_pending: Annotated[
        int | None, typer.Option(metavar="N", help="Pending requests for the sweep cost [1000000].")
    ] = None,
    sweep_due: Annotated[
        int | None, typer.Option(metavar="N", help="How many of those are due at once [1000].")
    ] = None,
    server_workers: Annotated[
        int | None, typer.Option("--workers", metavar="N", help="uvicorn processes of the stack [2].")
    ] = None,
    load_procs: Annotated[
        int | None, typer.Option(metavar="N", help="Python load-generator processes [one per core].")
    ] = None,
    python_load: Annotated[
        bool, typer.Option("--python-load", help="Use the Python load generator even if wrk is on PATH.")
    ] = False,
    log_level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="LOG_LEVEL of the stack under test [WARNING].")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Measure a stack already running there (loopback only)."),
    ] = None,
    auth_token: Annotated[
        str | None, typer.Option(metavar="TOKEN", help="With --url: the PLIVO_AUTH_TOKEN it verifies with.")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(metavar="URL", help="With --url: its GATEWAY_PUBLIC_URL [--url].")
    ] = None,
    redis_url: Annotated[
        str | None, typer.Option(metavar="URL", help="With --url: its REDIS_URL (e2e, delivery phases).")
    ] = None,
    key_prefix: Annotated[
        str | None, typer.Option(metavar="PREFIX", help="With --url: its GATEWAY_KEY_PREFIX [cg:].")
    ] = None,
    json_path: Annotated[
        str | None, typer.Option("--json", metavar="FILE", help="Also write the results to FILE as JSON.")
    ] = None,
) -> None:
    """Measure ingest, baselines, end-to-end latency, delivery and memory on loopback.

    Starts its own stack (embedded Redis, server, worker, receivers) unless --url points at a
    running one. Results and how to read them: docs/performance.md.
    """
    flags = dict(locals())  # first: only the options
    bench_main = tooling("tooling.bench.command", "bench").main

    for name in ("quick", "phases", "python_load"):
        flags.pop(name)
    flags["force_python_load"] = python_load or None
    raise typer.Exit(bench_main(quick, phases, flags))


def main() -> None:
    cli()
