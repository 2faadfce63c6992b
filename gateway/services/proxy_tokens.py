"""Tokens for the drop-in proxy: issued by the gateway, stored only as hashes.

A token is ``cgp_<id>_<mac>`` with ``mac = HMAC-SHA256(GATEWAY_PROXY_TOKEN_SECRET, id)``. Redis
keeps the id and the token's SHA-256 (``ptok:{id}``), enough to check a presented token and to
revoke it. Relaying a callback needs the token itself (it is the HMAC key of Plivo's V3 signature
the client verifies), so the worker re-derives it from the secret and the id kept in the request's
target. Why not store it: the secret lives in the deployment's Secret, not in Redis, so Redis (its
dumps, AOF files, replicas) holds nothing that authenticates anyone or forges a signature.

A token reaches only its ``resources``: prefixes of the path below ``/v1/Account/{auth_id}/``,
compared segment by segment (``Message/`` admits ``Message/{uuid}/``, not ``MessageX/``). The
default, also for tokens issued before tokens had resources, is ``Message/`` and ``Call/``: sending
and following messages and calls. ``Subaccount/`` answers with sub-account auth tokens, so a
token that reached it could mint lasting credentials; it, like ``Number/`` or anything else, must
be named when the token is issued. The account root (account details) is never reachable with a
token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from gateway.settings import Settings

_TOKEN = re.compile(r"^cgp_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")

DEFAULT_RESOURCES = ("Message/", "Call/")
MAX_RESOURCES = 20
_PREFIX = re.compile(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*/?")


def resource_prefix(value: str) -> str:
    """``value`` as a token's resource prefix, always ending in ``/``; ValueError if it is not one."""
    if len(value) > 256 or not _PREFIX.fullmatch(value) or ".." in value:
        raise ValueError("must be a resource prefix below /v1/Account/{auth_id}/, e.g. 'Message/'")
    return value if value.endswith("/") else value + "/"


def reaches(resources: tuple[str, ...], resource: str) -> bool:
    """Whether ``resource`` (the path below the account) starts with one of ``resources``, whole
    segments only. The account root (``""``) starts with none."""
    segments = resource.split("/")
    for prefix in resources:
        wanted = prefix.rstrip("/").split("/")
        if segments[: len(wanted)] == wanted:
            return True
    return False


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
