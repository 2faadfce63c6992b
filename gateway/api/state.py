"""The API process's resources, created in the lifespan and injected into routes."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from gateway.services.notify import Notifier
from gateway.services.upstream import PlivoClient
from gateway.settings import Settings
from gateway.store import DeliveryStore, Store, make_delivery_store
from gateway.store.ops import OpsStore


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    redis: Redis
    store: Store
    http: httpx.AsyncClient
    plivo: PlivoClient
    notifier: Notifier
    deliveries: DeliveryStore = field(init=False)
    ops: OpsStore = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = make_delivery_store(self.settings, self.redis)
        self.ops = OpsStore(self.redis, self.settings.GATEWAY_KEY_PREFIX)
