"""HTTPS served by the gateway itself (``serve`` with GATEWAY_TLS_CERT_FILE / GATEWAY_TLS_KEY_FILE).

Behind a TLS-terminating proxy or Ingress leave both empty (docs/https.md). When set, uvicorn
loads the PEM files and every server process builds its context through ``tls_context``, which
refuses anything older than TLS 1.2 whatever the OpenSSL defaults of the host are.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from gateway.settings import Settings

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def tls_context(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its context from the PEM files, TLS 1.2 at least.

    A module-level function so that it survives being sent to ``--workers`` processes."""
    context = default()
    context.minimum_version = MINIMUM_VERSION
    return context


def problem(settings: Settings) -> str | None:
    """Why the TLS settings cannot be served, or None."""
    cert, key = settings.GATEWAY_TLS_CERT_FILE, settings.GATEWAY_TLS_KEY_FILE
    if bool(cert) != bool(key):
        return "set both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE, or neither"
    for name, path in (("GATEWAY_TLS_CERT_FILE", cert), ("GATEWAY_TLS_KEY_FILE", key)):
        if path and not Path(path).is_file():
            return f"{name}: no such file {path}"
    return None


class UvicornTLS(TypedDict, total=False):
    """``uvicorn.Config``'s TLS arguments."""

    ssl_certfile: str
    ssl_keyfile: str
    ssl_version: int
    ssl_context_factory: Callable[[Any, Callable[[], ssl.SSLContext]], ssl.SSLContext]


def uvicorn_options(settings: Settings) -> UvicornTLS:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``: empty for plain HTTP."""
    if not settings.GATEWAY_TLS_CERT_FILE:
        return {}
    return {
        "ssl_certfile": settings.GATEWAY_TLS_CERT_FILE,
        "ssl_keyfile": settings.GATEWAY_TLS_KEY_FILE,
        "ssl_version": ssl.PROTOCOL_TLS_SERVER,
        "ssl_context_factory": tls_context,
    }
