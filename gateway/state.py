"""Per-process resources, created in the lifespan and injected into routes."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from gateway.notify import Notifier
from gateway.settings import Settings
from gateway.store import DeliveryStore, Store
from gateway.upstream import PlivoClient


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    redis: Redis
    store: Store
    http: httpx.AsyncClient
    plivo: PlivoClient
    notifier: Notifier
    deliveries: DeliveryStore = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = make_delivery_store(self.settings, self.redis)


def make_redis(settings: Settings, *, socket_timeout: float | None = 5.0) -> Redis:
    client: Redis = Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    return client


def make_delivery_store(settings: Settings, redis: Redis) -> DeliveryStore:
    return DeliveryStore(redis, settings.GATEWAY_KEY_PREFIX, retention=settings.GATEWAY_RETENTION)


def make_store(settings: Settings, redis: Redis) -> Store:
    return Store(
        redis,
        settings.GATEWAY_KEY_PREFIX,
        dedup_ttl=settings.GATEWAY_DEDUP_TTL,
        retention=settings.GATEWAY_RETENTION,
        grace=settings.GATEWAY_UNMATCHED_GRACE,
        nonce_window=settings.GATEWAY_NONCE_WINDOW,
    )
