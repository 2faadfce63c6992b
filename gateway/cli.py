"""The ``callback-gateway`` command line."""

from __future__ import annotations

import asyncio
import sys
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


def app_from_env() -> object:
    """uvicorn factory: each server process builds its app from the environment."""
    from gateway.app import create_app

    settings = load_settings()
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    return create_app(settings)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to bind")] = 8000,
    workers: Annotated[int, typer.Option(help="server processes")] = 1,
) -> None:
    """Run the API and callback receiver (uvicorn)."""
    import uvicorn

    settings = load_settings()
    if not settings.api_keys:
        typer.echo("refusing to start: set GATEWAY_API_KEYS (comma-separated bearer keys)", err=True)
        raise typer.Exit(2)
    if settings.GATEWAY_VERIFY_SIGNATURES and not settings.PLIVO_AUTH_TOKEN.get_secret_value():
        typer.echo("refusing to start: PLIVO_AUTH_TOKEN is needed to verify callbacks", err=True)
        raise typer.Exit(2)
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    if not settings.GATEWAY_VERIFY_SIGNATURES:
        logs.get("gateway.cli").warning("signature_verification_disabled")
    uvicorn.run(
        "gateway.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
    )


@cli.command()
def worker() -> None:
    """Run the worker that correlates callbacks, fans out events and delivers them."""
    from workers.main import run_worker

    settings = load_settings()
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    asyncio.run(run_worker(settings))


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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
