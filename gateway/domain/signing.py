"""Signatures: Plivo's V2/V3 callback signatures (verify and, for the sandbox, sign) and
Standard Webhooks signatures on the events we deliver.

Plivo V3 (docs/plivo.md §5), for a URL ``base?Q#frag`` and params P:

* GET:  ``base`` + ``?`` + sorted ``k=v`` pairs of Q merged with P joined by ``&`` (omitted if empty)
* POST: ``base`` + (``?`` + S(Q) if Q) + (``.`` if Q and P) + concatenated ``k`` + ``v`` of sorted P,
  with a ``?`` before P even when Q is empty; no params at all gives ``base`` (+ ``?S(Q)``)
* signature = base64(HMAC-SHA256(token, string + "." + nonce)); the header may list several.

Values are compared decoded (not percent-encoded). Keys sort by code point. This mirrors the
official SDK's ``plivo.utils.validate_v3_signature`` (our tests use it as the oracle) but never
raises on bad input and compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

Params = Mapping[str, Any]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, bool | int | float):
        return str(value)
    return str(value)


def split_url(uri: str) -> tuple[str, str]:
    """``(scheme://host[:port]/path, query)`` of ``uri``, as both signature versions read it."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def form_fields(text: str) -> Iterator[tuple[str, str]]:
    """The (key, value) pairs of form or query text, as ``parse_qsl(text, keep_blank_values=True)``
    gives them; a field is only unquoted when it holds a ``%`` or ``+`` (Plivo's plain fields
    don't: a property test holds the two equal)."""
    for field in text.split("&"):
        if not field:
            continue
        key, _, value = field.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        yield key, value


def _query_map(query: str) -> dict[str, list[str]]:
    """``parse_qsl(query, keep_blank_values=True)`` grouped by key."""
    merged: dict[str, list[str]] = {}
    for key, value in form_fields(query):
        merged.setdefault(key, []).append(value)
    return merged


def _sorted_query_string(params: Params) -> str:
    pairs: list[str] = []
    for key in sorted(params):
        value = params[key]
        if type(value) is str:  # the usual case first: a str is neither a list nor bytes
            pairs.append(f"{key}={value}")
        elif isinstance(value, list):
            pairs.append("&".join(f"{key}={v}" for v in sorted(_text(v) for v in value)))
        else:
            pairs.append(f"{key}={_text(value)}")
    return "&".join(pairs)


def _sorted_params_string(params: Params) -> str:
    out: list[str] = []
    for key in sorted(params):
        value = params[key]
        if type(value) is str:
            out.append(f"{key}{value}")
        elif isinstance(value, list):
            out.append("".join(f"{key}{v}" for v in sorted(_text(v) for v in value)))
        elif isinstance(value, Mapping):
            out.append(f"{key}{_sorted_params_string(value)}")
        else:
            out.append(f"{key}{_text(value)}")
    return "".join(out)


def v3_string_to_sign(method: str, uri: str, params: Params | None) -> str:
    """The string Plivo signs for a V3 signature (before ``.nonce`` is appended)."""
    base, query = split_url(uri)
    return v3_string_from_parts(method, base, query, params)


def v3_string_from_parts(method: str, base: str, query: str, params: Params | None) -> str:
    """``v3_string_to_sign`` for a URL already split into ``scheme://host[:port]/path`` and its
    query (the receiver splits its public URL once, not once per callback)."""
    params = params or {}
    if method.upper() == "GET":
        merged = dict(params)
        merged.update(_query_map(query))
        text = _sorted_query_string(merged)
        return f"{base}?{text}" if text else base
    query_text = _sorted_query_string(_query_map(query))
    if not params:
        return f"{base}?{query_text}" if query_text else base
    dot = "." if query_text else ""
    return f"{base}?{query_text}{dot}{_sorted_params_string(params)}"


def _hmac_b64(key: str, message: str) -> str:
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_v3(method: str, uri: str, params: Params | None, nonce: str, token: str) -> str:
    return _hmac_b64(token, f"{v3_string_to_sign(method, uri, params)}.{nonce}")


def sign_v2(uri: str, nonce: str, token: str) -> str:
    base, _ = split_url(uri)
    return _hmac_b64(token, base + nonce)


class Key:
    """An account's auth token as an HMAC-SHA256 key, prepared once: each signature then costs a
    copy of the keyed state instead of hashing the padded key again."""

    __slots__ = ("_mac",)

    def __init__(self, token: str) -> None:
        self._mac = hmac.new(token.encode("utf-8"), digestmod=hashlib.sha256) if token else None

    def matches(self, message: str, header: str) -> bool:
        """Whether ``header`` (one or several comma-separated signatures) holds the signature of
        ``message``; False for an empty token or header."""
        if self._mac is None or not header:
            return False
        mac = self._mac.copy()
        mac.update(message.encode("utf-8"))
        return _any_matches(base64.b64encode(mac.digest()).decode("ascii"), header)


def _any_matches(expected: str, header: str) -> bool:
    # Check every candidate without short-circuiting so timing does not reveal which matched.
    found = False
    for candidate in header.split(","):
        found |= hmac.compare_digest(expected.encode(), candidate.strip().encode())
    return found


def verify_v3(
    method: str, uri: str, params: Params | None, nonce: str, header: str, tokens: Iterable[str]
) -> bool:
    if not nonce or not header:
        return False
    message = f"{v3_string_to_sign(method, uri, params)}.{nonce}"
    return any(_any_matches(_hmac_b64(t, message), header) for t in tokens if t)


def verify_v2(uri: str, nonce: str, header: str, tokens: Iterable[str]) -> bool:
    if not nonce or not header:
        return False
    return any(_any_matches(sign_v2(uri, nonce, t), header) for t in tokens if t)


# --- Standard Webhooks (https://www.standardwebhooks.com) ----------------------------------------


def webhook_secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    return base64.b64decode(raw)


def sign_webhook(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: one ``v1,<sig>`` per secret, space separated."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    signatures = []
    for secret in secrets:
        digest = hmac.new(webhook_secret_bytes(secret), message, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def webhook_headers(secrets: Iterable[str], event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """A webhook's headers (Standard Webhooks), as the worker sends them: ``webhook-id`` is the
    event id on every attempt, so receivers can deduplicate."""
    return {
        "content-type": "application/json",
        "user-agent": "callback-gateway/0.1",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(secrets, event_id, timestamp, body),
    }


def new_webhook_secret() -> str:
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
