"""What a callback is once received: parsing, identity, and how it correlates.

Pure functions shared by the receiver (parse, identity) and the worker (correlation keys, links).
Which fields Plivo puts in an async result is undocumented beyond ``api_id``; we assume the
result may arrive without it and then fall back to the ``ref`` the gateway put into the
``callback_url`` query string when it submitted the request.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Required, TypedDict

from gateway.domain.errors import BadRequest
from gateway.domain.signing import form_fields

REF_PARAM = "cg_ref"

# A form or query string parsed: repeated keys become lists, single keys stay strings.
FormParams = dict[str, str | list[str]]


class InboxEntry(TypedDict, total=False):
    """An inbox entry (its field ``e``, JSON): a callback as the receiver stored it, or, with
    ``t`` = ``timeout``, a request whose deadline passed (written by the sweep, lua/expire.lua).
    A parked callback is this same JSON."""

    at: Required[int]  # epoch ms: when it was received, or when the request timed out
    cb: str  # the callback's id (``callback_id``)
    m: str  # its HTTP method
    q: str  # its raw query string
    enc: str  # how its payload was read: form | json | query | raw
    p: dict[str, Any]  # its parameters (``parse_form`` or ``parse_json``), {} when raw
    sv: str  # the signature version that verified it (v3 | v2); absent with verification off
    raw: str  # a signed payload that did not parse, as text ...
    raw_b64: str  # ... or base64, when it is not UTF-8
    perr: str  # why it did not parse
    t: str  # "timeout": a request's deadline, not a callback
    api_id: str  # the request that timed out


MAX_FORM_FIELDS = 1000


def parse_form(raw: bytes) -> FormParams:
    """Form or query text to a dict; repeated keys become lists, single keys stay strings.

    The same result as ``urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=1000)``
    (a property test holds them equal) in a third of its time (``form_fields``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("payload is not valid UTF-8") from exc
    if text.count("&") >= MAX_FORM_FIELDS:
        raise BadRequest("malformed form data: Max number of fields exceeded")
    out: FormParams = {}
    for key, value in form_fields(text):
        prev = out.get(key)
        if prev is None:
            out[key] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out[key] = [prev, value]
    return out


# Bounds on what a JSON body may hold. Past them json.loads raises RecursionError (nesting) or
# ValueError (over 4,300 digits), or returns what other parsers refuse (NaN, Infinity, 1e400).
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 100


_TOO_DEEP = object()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return out


def _depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value, walked without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in item)
    return deepest


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(value: Any) -> bool:
    """Whether every string and key in a parsed JSON value encodes as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a 400 that says what is wrong (used for callbacks and API bodies).

    Stricter than ``json.loads``: no NaN/Infinity or numbers that overflow a double, no duplicate
    keys, at most ``MAX_JSON_DEPTH`` levels and ``MAX_NUMBER_CHARS`` characters a number; so
    anything stored re-encodes as JSON every other parser reads the same way."""
    try:
        # Decoded here, strictly: json.loads(bytes) lets UTF-8-encoded surrogates through.
        text = raw.decode("utf-8")
        data = json.loads(
            text, parse_constant=_no_constant, parse_int=_int, parse_float=_float, object_pairs_hook=_object
        )
    except RecursionError:
        data = _TOO_DEEP  # nested far past MAX_JSON_DEPTH
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if data is _TOO_DEEP or _depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(data):
        # A \ud800 escape alone decodes to a code point UTF-8 cannot hold: nothing could store,
        # sign or send it. (A valid pair decodes to one character and passes.)
        raise BadRequest("body is not valid JSON: a \\u escape is a lone surrogate, not a character")
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def callback_id(query: str, params: dict[str, Any]) -> str:
    """Identity of a callback: the same payload to the same URL is the same callback.

    Plivo's retries resend the same parameters (with a fresh nonce and signature, which are
    headers and so not part of this), so they collapse onto one id."""
    canonical = json.dumps([query, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def uuid_list(value: Any) -> list[str]:
    """``message_uuid`` / ``request_uuid`` as a list, whatever shape the callback gave it."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value if v]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return [str(v) for v in parsed if v]
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True, slots=True)
class Correlatable:
    kind: str  # result | message | call | unknown
    ckey: str
    seq: str
    links: list[str]
    event_type: str
    ref: str = ""  # a result's callback-URL ref, next to its api_id (the fallback key)


def classify(cb_id: str, params: dict[str, Any], query: FormParams) -> Correlatable:
    """How a callback finds its request: the correlation key, and links it creates."""
    api_id = _scalar(params.get("api_id"))
    message_uuid = _scalar(params.get("MessageUUID"))
    request_uuid = _scalar(params.get("RequestUUID")) or _scalar(params.get("ALegRequestUUID"))
    if not api_id and message_uuid:
        seq = _scalar(params.get("Sequence"))
        seq = seq if seq.isascii() and seq.isdigit() else ""  # Lua tonumber() knows ASCII only
        return Correlatable("message", f"msg:{message_uuid}", seq, [], "message.status")
    if not api_id and request_uuid:
        return Correlatable("call", f"call:{request_uuid}", "", [], "call.status")
    links = [f"msg:{u}" for u in uuid_list(params.get("message_uuid"))]
    links += [f"call:{u}" for u in uuid_list(params.get("request_uuid"))]
    ref = _scalar(query.get(REF_PARAM)) or _scalar(params.get(REF_PARAM))
    if api_id:
        return Correlatable("result", f"api:{api_id}", "", links, "request.completed", ref)
    if ref:
        return Correlatable("result", f"ref:{ref}", "", links, "request.completed")
    return Correlatable("unknown", f"none:{cb_id}", "", [], "callback.unmatched")
