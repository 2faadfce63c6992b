"""OpenTelemetry spans (GATEWAY_OTEL_ENABLED): one trace from submit through correlation to delivery.

The real stack on loopback (gateway, sandbox calling back, worker, webhook receiver) records into the
SDK's in-memory exporter: submit (server) -> callback.correlate -> webhook.deliver (client), and the
webhook receives the delivery span's context as its ``traceparent``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.infra import otel, tracing
from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(otel, "_tracer", None)  # restored after the test
    otel.configure(provider)
    yield memory
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def hexes(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


async def test_one_trace_from_submit_to_webhook(
    stack_factory: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    stack: Stack = await stack_factory(GATEWAY_TRACE_PROPAGATION=True, GATEWAY_OTEL_ENABLED=True)
    body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    response = await stack.client.post(
        stack.gateway.url + "/v1/requests", json=body, headers={**stack.auth, "traceparent": INCOMING}
    )
    assert response.status_code == 202
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 1, timeout=15)
    names = {"submit", "callback.correlate", "webhook.deliver"}
    await wait_until(lambda: names <= set(by_name(exporter)), timeout=10)
    spans = by_name(exporter)
    submit, correlate, deliver = spans["submit"], spans["callback.correlate"], spans["webhook.deliver"]

    trace_id = INCOMING[3:35]
    assert {hexes(s)[0] for s in (submit, correlate, deliver)} == {trace_id}
    assert submit.kind == SpanKind.SERVER and parent_id(submit) == INCOMING[36:52]
    assert parent_id(correlate) == hexes(submit)[1]
    assert deliver.kind == SpanKind.CLIENT and parent_id(deliver) == hexes(correlate)[1]
    api_id = response.json()["api_id"]
    assert correlate.attributes is not None and correlate.attributes["callback_gateway.api_id"] == api_id
    assert deliver.attributes is not None and deliver.attributes["http.response.status_code"] == 200

    (hook,) = stack.receiver.on("/hook")
    assert hook.headers["traceparent"] == f"00-{trace_id}-{hexes(deliver)[1]}-01"
    assert json.loads(hook.body)["traceparent"] == f"00-{trace_id}-{hexes(correlate)[1]}-01"


async def test_a_submit_without_traceparent_starts_a_new_trace(
    stack_factory: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    stack: Stack = await stack_factory(GATEWAY_TRACE_PROPAGATION=True, GATEWAY_OTEL_ENABLED=True)
    body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    assert (await stack.submit(body)).status_code == 202
    await wait_until(lambda: {"submit", "webhook.deliver"} <= set(by_name(exporter)), timeout=15)
    spans = by_name(exporter)
    assert spans["submit"].parent is None
    assert hexes(spans["webhook.deliver"])[0] == hexes(spans["submit"])[0]
    (hook,) = stack.receiver.on("/hook")
    sent = tracing.parse(hook.headers["traceparent"])
    # Sampled; newer SDKs also set the W3C level-2 "random trace id" flag (03).
    assert sent is not None and sent[:2] == hexes(spans["webhook.deliver"]) and int(sent[2], 16) & 1


def test_otel_needs_both_settings(make_settings: Callable[..., Any]) -> None:
    assert tracing.otel_installed()
    assert tracing.otel_on(make_settings(GATEWAY_TRACE_PROPAGATION=True, GATEWAY_OTEL_ENABLED=True))
    assert not tracing.otel_on(make_settings(GATEWAY_TRACE_PROPAGATION=True))
    assert not tracing.otel_on(make_settings(GATEWAY_OTEL_ENABLED=True))
