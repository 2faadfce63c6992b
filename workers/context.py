"""What every worker task needs, created in the arq startup hook and closed at shutdown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis

from gateway.services.netguard import WebhookClient
from gateway.settings import Settings
from gateway.store import DeliveryStore, Store, now_ms
from gateway.store.delivery import AttemptLimits, BreakerPolicy

# arq's per-worker context, handed to every job and hook: arq's own entries (``redis``, ``job_try``,
# ...) and ours (``gw``: the WorkerContext; the consumer's stop event and tasks).
JobContext = dict[str, Any]


@dataclass(slots=True)
class WorkerContext:
    settings: Settings
    redis: Redis  # text client for the store
    store: Store
    deliveries: DeliveryStore
    arq: ArqRedis  # arq's own client (queue-target, retry and operator jobs are written by scripts)
    http: WebhookClient
    webhook_secret: str
    queue_name: str
    inflight: set[str] = field(default_factory=set)
    clock: Callable[[], int] = now_ms  # epoch ms; tests may pass their own
    limits: AttemptLimits | None = None  # built once from settings (workers.delivery)
    breaker: BreakerPolicy | None = None
