"""The Redis client both processes use: REDIS_URL, or the master the sentinels name."""

from __future__ import annotations

from typing import TypedDict

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from gateway.settings import Settings


def sentinel_hosts(settings: Settings) -> list[tuple[str, int]]:
    """REDIS_SENTINELS as (host, port) pairs; empty when Sentinel is not used."""
    hosts = []
    for hostport in settings.REDIS_SENTINELS:
        host, _, port = hostport.rpartition(":")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


class ClientOptions(TypedDict, total=False):
    """What every client is made with (``Redis.from_url``, ``Sentinel.master_for``)."""

    decode_responses: bool
    socket_connect_timeout: float
    socket_timeout: float | None
    health_check_interval: int
    retry_on_timeout: bool
    db: int  # with Sentinel, these three come from REDIS_URL (the sentinels name host and port)
    username: str
    password: str


REDIS_SOCKET_TIMEOUT_S = 5.0  # how long a command's reply may take before it is an error
REDIS_CONNECT_TIMEOUT_S = 2.0


def make_redis(settings: Settings, *, socket_timeout: float | None = REDIS_SOCKET_TIMEOUT_S) -> Redis:
    """A client for REDIS_URL, or for the master the sentinels name when REDIS_SENTINELS is set.

    A Sentinel-managed pool asks the sentinels for the master on every new connection and drops
    connections to a master that became a replica, so a failover costs the commands in flight
    (callers already treat RedisError as "retry later"), not a restart."""
    options: ClientOptions = {
        "decode_responses": True,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": socket_timeout,
        "health_check_interval": 15,
        "retry_on_timeout": False,
    }
    hosts = sentinel_hosts(settings)
    if hosts:
        url = parse_url(settings.REDIS_URL)
        if url.get("db") is not None:
            options["db"] = url["db"]
        if url.get("username") is not None:
            options["username"] = url["username"]
        if url.get("password") is not None:
            options["password"] = url["password"]
        sentinel = Sentinel(hosts, socket_connect_timeout=2.0, socket_timeout=2.0)  # type: ignore[no-untyped-call]
        master: Redis = sentinel.master_for(settings.REDIS_SENTINEL_MASTER, redis_class=Redis, **options)
        return master
    client: Redis = Redis.from_url(settings.REDIS_URL, **options)
    return client
