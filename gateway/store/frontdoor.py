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

from gateway.store.keys import Keys

# A fixed window counter: one INCR per request, the window starts with the first request.
# Atomic, so N processes together grant at most ``limit`` per window (tests/api/test_api_limits.py).
# KEYS: counter. ARGV: limit, window_ms. Returns 0 when allowed, else ms until the window ends.
_API_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n <= tonumber(ARGV[1]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return ttl
"""


class FrontDoorStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._api_rate = redis.register_script(_API_RATE)

    async def api_rate(self, caller: str, limit: int, window_ms: int) -> int:
        """0 when ``caller`` may go ahead, else the milliseconds until its window ends."""
        wait = await self._api_rate(keys=[self.keys.apirate(caller)], args=[limit, window_ms])
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
