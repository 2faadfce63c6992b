"""W3C Trace Context (``traceparent``) carried from a submit to the deliveries of its events.

Without an OpenTelemetry SDK: the gateway only *propagates* the context. A submit's ``traceparent``
header (or a new one when it has none) is stored with the request; the event born from its callback
records it (``event["traceparent"]``, also what queue-target jobs receive), and every webhook attempt
sends ``traceparent`` with the same trace id and a fresh span id (a child of the stored context), so
a tracing backend can join the caller's trace, the gateway's log lines and the receiver's spans.
Format: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``.

With GATEWAY_OTEL_ENABLED as well and the ``otel`` extra installed, ``span`` makes those contexts
real OpenTelemetry spans (``gateway.infra.otel``, imported only then).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gateway.infra import logs
from gateway.infra.traced import Traced

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logs.get("gateway.infra.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def parse(header: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of a valid version-00 ``traceparent``, else None."""
    found = _TRACEPARENT.match((header or "").strip().lower())
    if not found or found.group(1) == _ZERO_TRACE or found.group(2) == _ZERO_SPAN:
        return None
    return found.group(1), found.group(2), found.group(3)


def new() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def incoming_or_new(header: str | None) -> str:
    """The caller's context when it sent a valid one, else the root of a new trace."""
    parsed = parse(header)
    return f"00-{parsed[0]}-{parsed[1]}-{parsed[2]}" if parsed else new()


def child(traceparent: str) -> str:
    """The same trace, a new span id: what the gateway sends on an outgoing request."""
    parsed = parse(traceparent)
    if parsed is None:
        return new()
    return f"00-{parsed[0]}-{secrets.token_hex(8)}-{parsed[2]}"


@functools.cache
def otel_installed() -> bool:
    found = importlib.util.find_spec("opentelemetry.sdk") is not None
    if not found:
        log.warning("otel_not_installed", hint="pip install 'callback-gateway[otel]'; no spans are made")
    return found


def otel_on(settings: Settings) -> bool:
    return settings.GATEWAY_TRACE_PROPAGATION and settings.GATEWAY_OTEL_ENABLED and otel_installed()


@contextmanager
def span(
    settings: Settings,
    name: str,
    parent: str,
    *,
    fallback: str,
    kind: str = "internal",
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[Traced]:
    """An OpenTelemetry span, child of ``parent``, when OTel is on; otherwise just ``fallback``."""
    if not otel_on(settings):
        yield Traced(fallback)
        return
    from gateway.infra import otel

    with otel.span(name, parent, kind, attributes or {}) as traced:
        yield traced
