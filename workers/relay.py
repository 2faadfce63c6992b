"""Relaying an async result to a drop-in proxy client as Plivo itself would have sent it.

The client gave Plivo's API a ``callback_url`` through the proxy; it expects Plivo's callback
there: the result's fields form-encoded on POST (in the query on GET), with
``X-Plivo-Signature-V3`` / ``-Nonce`` computed with the token it authenticated with, so its
existing ``validate_v3_signature`` check keeps working. Only ``request.completed`` is a Plivo
callback; the gateway's other events of that request (timeouts, status links) are not relayed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from gateway.domain.signing import sign_v3
from gateway.domain.targets import RELAY, RelayTarget
from gateway.services.proxy_tokens import relay_token
from gateway.settings import Settings

__all__ = ["RELAY", "RELAYED_TYPES", "RelayRequest", "build"]

RELAYED_TYPES = frozenset({"request.completed"})


@dataclass(frozen=True, slots=True)
class RelayRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


def build(settings: Settings, target: RelayTarget, data: Mapping[str, Any] | None) -> RelayRequest:
    """The request that relays an event whose ``data`` (the callback's fields) is ``data``."""
    params = dict(data or {})
    token = relay_token(settings, target.token_id)
    nonce = str(secrets.randbelow(10**20)).zfill(20)
    headers = {"user-agent": "callback-gateway/0.1 (plivo relay)", "x-plivo-signature-v3-nonce": nonce}
    url = target.url
    if target.method == "GET":
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        headers["x-plivo-signature-v3"] = sign_v3("GET", url, None, nonce, token)
        return RelayRequest("GET", url, headers, None)
    headers["x-plivo-signature-v3"] = sign_v3("POST", url, params, nonce, token)
    headers["content-type"] = "application/x-www-form-urlencoded"
    return RelayRequest("POST", url, headers, urlencode(params, doseq=True).encode())
