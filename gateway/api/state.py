"""The API process's resources, created in the lifespan and injected into routes."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis

from gateway.history.client import HistoryClient
from gateway.services.backlog import HistoryBacklog
from gateway.services.notify import Notifier
from gateway.services.upstream import PlivoClient
from gateway.settings import Settings
from gateway.store import DeliveryStore, Store, make_delivery_store
from gateway.store.archive import ArchiveStore
from gateway.store.ops import OpsStore


@dataclass(slots=True)
class GatewayState:
    settings: Settings
    redis: Redis
    store: Store
    http: httpx.AsyncClient
    plivo: PlivoClient
    notifier: Notifier
    history: HistoryClient
    deliveries: DeliveryStore = field(init=False)
    ops: OpsStore = field(init=False)
    archive: ArchiveStore = field(init=False)
    backlog: HistoryBacklog = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = make_delivery_store(self.settings, self.redis)
        self.ops = OpsStore(self.redis, self.settings.GATEWAY_KEY_PREFIX)
        self.archive = ArchiveStore(self.redis, self.settings.GATEWAY_KEY_PREFIX)
        self.backlog = HistoryBacklog(self.archive, self.settings.GATEWAY_HISTORY_BACKLOG_MAX)
