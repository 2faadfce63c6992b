"""The ``callback-gateway`` command line."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from pydantic import ValidationError

from gateway import logs
from gateway.settings import Settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        typer.echo("invalid configuration:\n" + "\n".join(lines), err=True)
        raise typer.Exit(2) from None


# Collect young objects every 20,000 net allocations instead of 700, older ones as rarely.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """For a long-running server process, once its modules are loaded.

    Python's cyclic collector, at its defaults, cost the worker 1.5 s of CPU per 10,000 deliveries
    (a sixth of it; half of that in full collections walking every module, class and function
    loaded) and the API 3 % of its CPU under load; almost nothing it found was garbage, since the
    hot paths make few reference cycles. ``gc.freeze()`` moves everything alive now (the imports)
    out of the collector's sight for good, and higher thresholds make collections rarer: 0.07 s
    per 10,000 deliveries (docs/performance.md). Cyclic garbage is still collected, in larger
    and rarer batches: up to 20,000 young objects can wait for theirs (the full-size soak: worker
    RSS flat, the API's +3.4 MB over 10 minutes; docs/reliability.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def app_from_env() -> object:
    """uvicorn factory: each server process builds its app from the environment."""
    from gateway import serving
    from gateway.app import create_app

    settings = load_settings()
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    serving.configure(settings)
    app = create_app(settings)
    tune_gc()
    return app


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    workers: Annotated[int, typer.Option(help="server processes")] = 1,
) -> None:
    """Run the API and callback receiver (uvicorn)."""
    from gateway import serving

    settings = load_settings()
    if not settings.api_keys:
        typer.echo("refusing to start: set GATEWAY_API_KEYS (comma-separated bearer keys)", err=True)
        raise typer.Exit(2)
    if settings.GATEWAY_VERIFY_SIGNATURES and not settings.PLIVO_AUTH_TOKEN.get_secret_value():
        typer.echo("refusing to start: PLIVO_AUTH_TOKEN is needed to verify callbacks", err=True)
        raise typer.Exit(2)
    if port == settings.GATEWAY_ADMIN_PORT:
        typer.echo("refusing to start: GATEWAY_ADMIN_PORT must differ from --port", err=True)
        raise typer.Exit(2)
    from gateway import tls

    tls_problem = tls.problem(settings)
    if tls_problem:
        typer.echo(f"refusing to start: {tls_problem}", err=True)
        raise typer.Exit(2)
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    if not settings.GATEWAY_VERIFY_SIGNATURES:
        logs.get("gateway.cli").warning("signature_verification_disabled")
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


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it comes with uvicorn[standard]): a faster loop for the worker."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


@cli.command()
def worker() -> None:
    """Run the worker that correlates callbacks, fans out events and delivers them."""
    from workers.main import run_worker

    settings = load_settings()
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    tune_gc()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(run_worker(settings))


@cli.command()
def sandbox(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8001,
) -> None:
    """Run a local stand-in for Plivo's API that calls callback_url back, signed."""
    import uvicorn

    from gateway.sandbox import create_sandbox

    settings = load_settings()
    auth_id = settings.PLIVO_AUTH_ID
    token = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    if not auth_id or not token:
        typer.echo("set PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN for the sandbox to accept", err=True)
        raise typer.Exit(2)
    uvicorn.run(create_sandbox(auth_id, token), host=host, port=port, access_log=False, log_level="warning")


@cli.command()
def dev(port: Annotated[int, typer.Option(help="gateway port")] = 8000) -> None:
    """Everything on one machine: embedded Redis, sandbox, API/receiver and worker."""
    from gateway.dev import run_dev

    sys.exit(run_dev(port))


@cli.command()
def bench(
    quick: Annotated[
        bool, typer.Option(help="tiny run in seconds (proves it works; figures meaningless)")
    ] = False,
    phases: Annotated[
        str | None, typer.Option(help="comma list: ingest,baselines,e2e,delivery,memory")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="seconds per saturated run [8]")] = None,
    warmup: Annotated[
        float | None, typer.Option(help="warm-up seconds before each saturated run [1]")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="connections for saturated runs [64]")] = None,
    fixed_rate: Annotated[
        int | None, typer.Option(help="ingest rate for the latency figure [1000/s]")
    ] = None,
    fixed_duration: Annotated[float | None, typer.Option(help="seconds at --fixed-rate [5]")] = None,
    e2e_rate: Annotated[int | None, typer.Option(help="callbacks/s for end-to-end latency [500]")] = None,
    e2e_duration: Annotated[float | None, typer.Option(help="seconds at --e2e-rate [8]")] = None,
    deliveries: Annotated[int | None, typer.Option(help="webhooks for delivery throughput [10000]")] = None,
    pending: Annotated[
        int | None, typer.Option(help="pending requests for the memory figure [100000]")
    ] = None,
    sweep_pending: Annotated[int | None, typer.Option(help="pending for the sweep cost [1000000]")] = None,
    sweep_due: Annotated[int | None, typer.Option(help="due among them [1000]")] = None,
    server_workers: Annotated[int | None, typer.Option("--workers", help="uvicorn processes [2]")] = None,
    load_procs: Annotated[int | None, typer.Option(help="Python load processes [one per core]")] = None,
    python_load: Annotated[
        bool, typer.Option(help="use the Python generator even if wrk is on PATH")
    ] = False,
    log_level: Annotated[str | None, typer.Option(help="LOG_LEVEL of the stack under test [WARNING]")] = None,
    url: Annotated[str | None, typer.Option(help="target a running stack (loopback only)")] = None,
    auth_token: Annotated[str | None, typer.Option(help="with --url: its PLIVO_AUTH_TOKEN")] = None,
    public_url: Annotated[str | None, typer.Option(help="with --url: its GATEWAY_PUBLIC_URL")] = None,
    redis_url: Annotated[str | None, typer.Option(help="with --url: its REDIS_URL (e2e, delivery)")] = None,
    key_prefix: Annotated[str | None, typer.Option(help="with --url: its GATEWAY_KEY_PREFIX [cg:]")] = None,
    json_path: Annotated[str | None, typer.Option("--json", help="also write the results as JSON")] = None,
) -> None:
    """Measure ingest, baselines, end-to-end latency, delivery and memory on loopback."""
    flags = dict(locals())  # first: only the options
    from gateway.bench.command import main as bench_main

    for name in ("quick", "phases", "python_load"):
        flags.pop(name)
    flags["force_python_load"] = python_load or None
    raise typer.Exit(bench_main(quick, phases, flags))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
