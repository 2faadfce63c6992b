"""What a traced step hands on, with or without OpenTelemetry (gateway.infra.tracing, .otel)."""

from __future__ import annotations


class Traced:
    """The context a traced step passes on: ``traceparent`` ("" when there is none)."""

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def set(self, key: str, value: str | int) -> None:
        """An attribute of the span (nothing without OpenTelemetry)."""
