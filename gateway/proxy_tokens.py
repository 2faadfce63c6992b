"""Tokens for the drop-in proxy: issued by the gateway, stored only as hashes.

A token is ``cgp_<id>_<mac>`` with ``mac = HMAC-SHA256(GATEWAY_PROXY_TOKEN_SECRET, id)``. Redis
keeps the id and the token's SHA-256 (``ptok:{id}``), enough to check a presented token and to
revoke it. Relaying a callback needs the token itself (it is the HMAC key of Plivo's V3 signature
the client verifies), so the worker re-derives it from the secret and the id kept in the request's
target. Why not store it: the secret lives in the deployment's Secret, not in Redis, so Redis (its
dumps, AOF files, replicas) holds nothing that authenticates anyone or forges a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from gateway.settings import Settings

# The kind of target that relays a callback to a proxy client (gateway.proxy, workers.relay).
RELAY = "plivo_relay"
_TOKEN = re.compile(r"^cgp_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


def derive(secret: str, token_id: str) -> str:
    mac = hmac.new(secret.encode(), f"proxy-token|{token_id}".encode(), hashlib.sha256).digest()
    return f"cgp_{token_id}_{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def new_token_id() -> str:
    return secrets.token_hex(8)


def token_id_of(token: str) -> str | None:
    found = _TOKEN.match(token)
    return found.group(1) if found else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def relay_token(settings: Settings, token_id: str) -> str:
    """The token a client validates relayed callbacks with: its issued token, or (``token_id``
    empty: the client authenticated with the real credentials) the account's AUTH TOKEN."""
    if not token_id:
        return settings.PLIVO_AUTH_TOKEN.get_secret_value()
    return derive(settings.GATEWAY_PROXY_TOKEN_SECRET.get_secret_value(), token_id)
