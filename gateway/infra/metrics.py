"""Prometheus metrics: counters kept per process, gauges read from Redis at scrape time.

Counters and the latency histogram count what *this* process did, so they live where the work
happens: the API process counts received callbacks (``stored``, ``duplicate``, ``bad_signature``,
``replayed_nonce``, ``rejected_input``, ``not_stored``) and submits; the worker counts correlation
outcomes (``matched``, ``parked``, ``unmatched``, ...) under the same ``callbacks`` metric, delivery
attempts and the delivery latency. The worker serves them on its own port (``WORKER_METRICS_PORT``):
no extra state in Redis, and a dead worker's counters vanish with it as Prometheus expects.

Everything that describes Redis state (pending requests, oldest pending age, inbox backlog, arq
queue, dead letters, live workers, breaker states) is *not* a process counter: the API computes
it at scrape time (``OpsStore.gauges``: fourteen commands in two pipelined round trips, however many
subscriptions there are), so every API replica reports the same true value and nothing drifts.
With ``GATEWAY_METRICS_TOKEN`` set, the API's /metrics needs it as a bearer token.

With ``uvicorn --workers N`` each server process has its own counters. When the environment sets
``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, wiped before start), prometheus-client keeps them in
shared files and /metrics aggregates all processes; without it a scrape sees one process's counters.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "render", "serve_worker_metrics"]


@dataclass(slots=True)
class Gauges:
    """One scrape's figures read from Redis (gateway.store.ops computes them)."""

    pending_requests: int = 0
    oldest_pending_age_s: float = 0.0
    inbox_backlog: int = 0
    inbox_unacked: int = 0
    inbox_failed: int = 0
    arq_queue: int = 0
    dead_letters: int = 0
    workers_alive: int = 0
    history_backlog: int = 0
    history_oldest_age_s: float = 0.0
    breakers: dict[str, int] = field(default_factory=dict)


NS = "callback_gateway"

CALLBACKS = Counter(f"{NS}_callbacks", "Callbacks, by outcome (receiver and correlation)", ["outcome"])
SUBMITS = Counter(f"{NS}_submits", "Submits to the gateway API, by upstream status", ["upstream_status"])
DELIVERY_ATTEMPTS = Counter(f"{NS}_delivery_attempts", "Delivery attempts, by outcome", ["outcome"])
DELIVERY_LATENCY = Histogram(
    f"{NS}_delivery_latency_seconds",
    "Callback received -> first successful delivery of its event",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 7200, 86400),
)


HISTORY_ROWS = Counter(f"{NS}_history_rows", "Rows upserted into PostgreSQL by the archiver")
HISTORY_WRITE_SECONDS = Histogram(
    f"{NS}_history_write_seconds",
    "One archiver batch written to PostgreSQL (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@functools.cache
def child(metric: Counter, label: str) -> Counter:
    """``metric.labels(label)``, looked up once per label (labels() costs a lock and a tuple
    each call, on every delivery; the label values are a small closed set)."""
    return metric.labels(label)


def _ms_since_iso(created_at: str, now_s: float) -> float:
    at = datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
    return max(0.0, now_s - at)


def observe_first_success(created_at: object, now_s: float) -> None:
    if isinstance(created_at, str) and created_at:
        DELIVERY_LATENCY.observe(_ms_since_iso(created_at, now_s))


class _RedisGauges(Collector):
    """One scrape's Redis figures as Prometheus gauges."""

    def __init__(self, g: Gauges) -> None:
        self.g = g

    def collect(self) -> list[Metric]:
        g = self.g
        plain = [
            ("pending_requests", "Requests waiting for their callback", g.pending_requests),
            ("oldest_pending_age_seconds", "Age of the oldest pending request", g.oldest_pending_age_s),
            ("inbox_backlog", "Callbacks stored and not yet acknowledged by a worker", g.inbox_backlog),
            ("inbox_unacked", "Inbox entries a worker read but has not finished", g.inbox_unacked),
            ("inbox_failed", "Inbox entries that could not be processed (kept)", g.inbox_failed),
            ("queue_depth", "Jobs in the gateway's arq queue (retries, deferrals)", g.arq_queue),
            ("dead_letters", "Deliveries failed for good (within retention)", g.dead_letters),
            ("workers_alive", "Workers with a fresh heartbeat", g.workers_alive),
            (
                "history_backlog",
                "Changed requests not copied to PostgreSQL yet (the outbox)",
                g.history_backlog,
            ),
            (
                "history_oldest_age_seconds",
                "How long the oldest change not yet copied to PostgreSQL has waited",
                g.history_oldest_age_s,
            ),
        ]
        out: list[Metric] = [GaugeMetricFamily(f"{NS}_{name}", doc, value=v) for name, doc, v in plain]
        breakers = GaugeMetricFamily(
            f"{NS}_circuit_breakers", "Subscriptions per circuit-breaker state", labels=["state"]
        )
        for state, count in sorted(g.breakers.items()):
            breakers.add_metric([state], count)
        out.append(breakers)
        return out


def process_registry() -> CollectorRegistry:
    """This process's counters, or every process's when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render(gauges: Gauges | None) -> bytes:
    text = generate_latest(process_registry())
    if gauges is not None:
        redis_registry = CollectorRegistry(auto_describe=False)
        redis_registry.register(_RedisGauges(gauges))
        text += generate_latest(redis_registry)
    return text


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """The worker's own /metrics (a daemon thread of prometheus-client)."""
    start_http_server(port, addr=host, registry=process_registry())
