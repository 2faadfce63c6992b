"""OpenTelemetry spans for one trace from submit to delivery (the optional ``otel`` extra).

Imported only by ``gateway.infra.tracing.span`` when GATEWAY_OTEL_ENABLED (with GATEWAY_TRACE_PROPAGATION)
is set and the packages are installed. Spans: ``submit`` (server; its context is the request's stored
``traceparent``), ``callback.correlate`` (worker, child of the stored context; its context becomes
``event["traceparent"]``) and ``webhook.deliver`` per attempt (client, child of the event's context;
its context is the ``traceparent`` header sent). Spans go to the global tracer provider; when none is
configured, an SDK provider is installed, exporting over OTLP/HTTP if the exporter is installed
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME`` apply).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.infra import logs
from gateway.infra.traced import Traced

log = logs.get("gateway.infra.otel")

KINDS = {
    "server": trace.SpanKind.SERVER,
    "client": trace.SpanKind.CLIENT,
    "internal": trace.SpanKind.INTERNAL,
}
_propagator = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None


def configure(provider: trace.TracerProvider | None = None) -> None:
    """Use ``provider`` (tests: an SDK provider with an in-memory exporter), else the global one."""
    global _tracer
    if provider is None:
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody configured OpenTelemetry
            provider = _default_provider()
            trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("callback-gateway")


def _default_provider() -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "callback-gateway"}))
    try:
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        log.warning("otel_no_exporter", hint="pip install opentelemetry-exporter-otlp-proto-http")
        return provider
    provider.add_span_processor(BatchSpanProcessor(module.OTLPSpanExporter()))
    return provider


class _Recording(Traced):
    def __init__(self, span: trace.Span) -> None:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        super().__init__(carrier.get("traceparent", ""))
        self._span = span

    def set(self, key: str, value: str | int) -> None:
        self._span.set_attribute(key, value)


@contextmanager
def span(name: str, parent: str, kind: str, attributes: Mapping[str, str | int]) -> Iterator[Traced]:
    """A span, child of the ``parent`` traceparent (a new trace when it is empty or invalid)."""
    if _tracer is None:
        configure()
    assert _tracer is not None
    context = _propagator.extract({"traceparent": parent}) if parent else None
    current = _tracer.start_span(name, context=context, kind=KINDS[kind], attributes=dict(attributes))
    try:
        yield _Recording(current)
    except BaseException as exc:
        current.record_exception(exc)
        current.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        current.end()
