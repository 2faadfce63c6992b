"""The front door's data: per-API-key rate limits and the drop-in proxy's issued tokens.

Keys ``apirate:{caller}`` and ``ptok:{token_id}`` (map: ``gateway.store.keys``).

A ``ptok`` hash: ``hash``, ``created_at``, ``description``, ``resources``, ``targets`` and
``metadata`` (JSON). A token issued before tokens had ``resources`` has none: the proxy gives it
``proxy_tokens.DEFAULT_RESOURCES``.

``caller`` is a short SHA-256 of the API key (or of the proxy token id), so no key ever appears in
Redis. A proxy token record holds the SHA-256 of the token, never the token: the gateway derives
the token from ``GATEWAY_PROXY_TOKEN_SECRET`` and the id when it must re-sign a relayed callback
(``gateway.services.proxy_tokens``), so a leaked Redis dump authenticates nobody.
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store import scripts
from gateway.store.keys import Keys


class FrontDoorStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._api_rate = scripts.load(redis, "api_rate")

    async def api_rate(self, caller: str, limit: int, window_ms: int) -> int:
        """0 when ``caller`` may go ahead, else the milliseconds until its window ends."""
        wait = await self._api_rate(counter=self.keys.apirate(caller), limit=limit, window_ms=window_ms)
        return int(wait)

    async def save_token(self, token_id: str, record: dict[str, str]) -> None:
        """``record``: ``hash`` (SHA-256 of the token), ``created_at``, ``description``, the
        ``resources`` it may reach and the ``targets`` / ``metadata`` every async request made
        with the token gets (those three JSON)."""
        await self.redis.hset(self.keys.ptok(token_id), mapping=record)  # type: ignore[misc]

    async def get_token(self, token_id: str) -> dict[str, str]:
        found: dict[str, str] = await self.redis.hgetall(self.keys.ptok(token_id))  # type: ignore[misc]
        return found

    async def delete_token(self, token_id: str) -> bool:
        return bool(await self.redis.delete(self.keys.ptok(token_id)))
