"""Hostile bodies, at the sizes and shapes an attacker sends, on every endpoint that takes a body.

``tests/api/test_fuzz.py`` throws small random input (under 300 bytes, 10 leaves) at the receiver and
the submit. This module writes JSON text itself, so it can hold what ``json.dumps`` never writes:
nesting up to 50,000 deep, numbers of thousands of digits, NaN/Infinity/1e400, duplicate keys,
lone surrogates, syntax junk; plus bodies around GATEWAY_MAX_BODY_BYTES (whole or in chunks),
bytes that are not UTF-8, forms of thousands of fields, and every field of every endpoint's valid
body replaced by values of every JSON type.

What must hold:

* API: never a 5xx (bar 502 where Plivo is called), every error exactly ``{"api_id", "error"}``
  with a message, never a traceback; JSON the strict parser refuses (deeper than 64 levels, a
  number over 100 characters or out of a double's range, NaN/Infinity, a duplicate key, not UTF-8,
  not JSON) is a 400, a body over the limit a 413.
* ``/callbacks/plivo``: unsigned input is a 4xx and stores nothing; a V2-signed callback of any
  shape is a 200 and stored once (raw, with why it did not parse, if it did not).
* Nowhere an ``unhandled_error`` log line.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import pytest
import structlog
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.api.app import create_app
from gateway.domain.signing import sign_v2
from gateway.settings import Settings

# The contract of the strict parser (gateway.domain.callbacks.parse_json), stated here on its own.
MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100
LIMIT = 256 * 1024  # GATEWAY_MAX_BODY_BYTES of the app under test

AUTH_ID = "MAHOSTILEHOSTILE0000"
TOKEN = "hostile-token-" + "x" * 20
API_KEY = "hostile-key-1234567890"
PUBLIC_URL = "http://gateway.test"
HOOK = "http://127.0.0.1:9/hook"  # IP literals only: a host name would be resolved on every example
Events = list[MutableMapping[str, Any]]  # log events, as structlog.testing.capture_logs gives them
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

# Hypothesis describes a strategy (once) when a filter retries; these describe to hundreds of KiB.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# --- JSON text, written by hand -----------------------------------------------------------------


class Fragment(NamedTuple):
    """A piece of JSON text; ``bad`` if the strict parser must refuse it wherever it stands."""

    text: str
    bad: bool
    depth: int  # containers nested, as the parser counts them (a scalar is 0)

    def __repr__(self) -> str:  # a failing example's report stays readable
        return f"Fragment({_short(self.text)}, bad={self.bad}, depth={self.depth})"


def _short(value: str | bytes) -> str:
    """``value``, cut in the middle if long (bodies reach hundreds of KiB)."""
    if len(value) <= 400:
        return repr(value)
    return f"{value[:300]!r} ... {value[-60:]!r} ({len(value)} long)"


def _number(text: str) -> Fragment:
    bad = len(text) > MAX_NUMBER_CHARS or not math.isfinite(float(text))
    return Fragment(text, bad, 0)


def _long_number(sign: str, digits: int, form: str) -> Fragment:
    body = {
        "int": "9" * digits,
        "frac": "1." + "7" * digits,
        "exp": "1e" + "9" * digits,
        "tiny": "1e-" + "9" * digits,
    }[form]
    return _number(sign + body)


# Within the bounds: up to 100 characters and finite (1e-400 underflows to 0.0, which is fine).
valid_numbers = st.one_of(
    st.integers(min_value=-(10**99) + 1, max_value=10**100 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.sampled_from(["1e308", "1.7976931348623157e308", "1e-400", "-0", "0e99999", "-0.0E-0"]),
).map(_number)
numbers = st.one_of(
    valid_numbers,
    st.integers(min_value=-(10**120), max_value=10**120).map(str).map(_number),
    st.builds(
        _long_number,
        st.sampled_from(["", "-"]),
        st.integers(1, 5000) | st.sampled_from([98, 99, 100, 101, 4300, 4301]),
        st.sampled_from(["int", "frac", "exp", "tiny"]),
    ),
    st.sampled_from(["1e400", "-1e400", "1E+999", "1.8e308"]).map(_number),
)
constants = st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(lambda t: Fragment(t, True, 0))
NASTY_STRINGS = [
    "",
    " ",
    "inf",
    "-inf",
    "Infinity",
    "NaN",
    "1e400",
    "1e308",
    "-1",
    "0",
    "true",
    "null",
    "[]",
    "{}",
    "\ud800",
    "\udfff\ud800",
    "\x00",
    "\u2028",
    "POST",
    "Call/",
    "../",
    "*",
    "request.completed",
    "cg:queue",
    "arq:queue",
    "q" * 129,
    "a" * 3000,
    HOOK,
    "https://[::1]:9/x",
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
]
nasty_strings = st.sampled_from(NASTY_STRINGS)
any_strings = nasty_strings | st.text(max_size=40)
strings = st.one_of(
    st.sampled_from(["\ud800", "\udfff\ud800", "a\udc00"]).map(json.dumps),  # valid JSON, not UTF-8
    any_strings.map(json.dumps),
    any_strings.map(lambda s: json.dumps(s, ensure_ascii=False)),  # lone surrogates as raw bytes
    st.sampled_from(['"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"\\ud83d\\ude00"', '"\\/"']),
).map(lambda t: Fragment(t, False, 0))
# Not JSON at all: any of these anywhere makes the whole body a 400.
junk = st.sampled_from(
    [
        "01",
        "+1",
        ".5",
        "1.",
        "-",
        "tru",
        "nul",
        "'x'",
        '"\\x"',
        '"open',
        "[1,]",
        '{"a":1,}',
        "",
        "1 2",
        '"\t"',
    ]
).map(lambda t: Fragment(t, True, 0))
scalars = st.one_of(
    st.sampled_from(["null", "true", "false"]).map(lambda t: Fragment(t, False, 0)),
    numbers,
    strings,
    constants,
    junk,
)
valid_scalars = st.one_of(
    st.sampled_from(["null", "true", "false"]).map(lambda t: Fragment(t, False, 0)),
    valid_numbers,
    strings,
)

KEYS = [('"a"', "a"), ('"\\u0061"', "a"), ('"api_id"', "api_id"), ('""', ""), ('"\\ud800"', "\ud800")]
keys = st.sampled_from(KEYS) | st.text(max_size=8).map(lambda s: (json.dumps(s), s))


def _array(items: list[Fragment]) -> Fragment:
    text = "[" + ",".join(i.text for i in items) + "]"
    return Fragment(text, any(i.bad for i in items), 1 + max((i.depth for i in items), default=0))


def _object(pairs: list[tuple[tuple[str, str], Fragment]]) -> Fragment:
    text = "{" + ",".join(f"{k}:{v.text}" for (k, _), v in pairs) + "}"
    names = [name for (_, name), _ in pairs]
    bad = len(set(names)) < len(names) or any(v.bad for _, v in pairs)
    return Fragment(text, bad, 1 + max((v.depth for _, v in pairs), default=0))


def _first_of_each(pairs: list[tuple[tuple[str, str], Fragment]]) -> list[tuple[tuple[str, str], Fragment]]:
    first: dict[str, tuple[tuple[str, str], Fragment]] = {}
    for pair in pairs:
        first.setdefault(pair[0][1], pair)
    return list(first.values())


def _containers(inner: st.SearchStrategy[Fragment], unique: bool = False) -> st.SearchStrategy[Fragment]:
    pairs = st.lists(st.tuples(keys, inner), max_size=8)
    if unique:  # not ``unique_by``: that filters, and describes (repr) this large strategy to do so
        pairs = pairs.map(_first_of_each)
    return st.lists(inner, max_size=8).map(_array) | pairs.map(_object)


def _duplicate(key: tuple[str, str], first: Fragment, second: Fragment) -> Fragment:
    return _object([(key, first), (key, second)])


def _deep(levels: int, kinds: list[str], leaf: Fragment) -> Fragment:
    """``levels`` containers, one inside the other, in the repeating pattern ``kinds``."""
    opener = {"list": "[", "dict": '{"a":'}
    closer = {"list": "]", "dict": "}"}
    rounds, rest = divmod(levels, len(kinds))
    opens = "".join(opener[k] for k in kinds) * rounds + "".join(opener[k] for k in kinds[:rest])
    closes = (
        "".join(closer[k] for k in reversed(kinds[:rest]))
        + "".join(closer[k] for k in reversed(kinds)) * rounds
    )
    return Fragment(opens + leaf.text + closes, leaf.bad, levels + leaf.depth)


deep = st.builds(
    _deep,
    st.integers(1, 50_000) | st.sampled_from([63, 64, 65, 1000, 20_000, 50_000]),
    st.lists(st.sampled_from(["list", "dict"]), min_size=1, max_size=3),
    valid_scalars,
)
# Trees of up to 500 leaves, any of which may be hostile; and a few directly deep values in a tree.
trees = st.recursive(
    scalars, lambda inner: _containers(inner) | st.builds(_duplicate, keys, inner, inner), max_leaves=500
)
fragments = trees | st.recursive(deep, lambda inner: _containers(inner | scalars), max_leaves=5)
valid_fragments = st.recursive(valid_scalars, lambda inner: _containers(inner, unique=True), max_leaves=200)


# --- bodies ----------------------------------------------------------------------------------------


class Body(NamedTuple):
    content: bytes
    content_type: str
    refused: bool  # as JSON, the strict parser must refuse it (400)

    def __repr__(self) -> str:
        return f"Body({_short(self.content)}, {self.content_type!r}, refused={self.refused})"


HOLE = "@@hostile-hole@@"


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every position in a body: each key and index, containers and leaves alike."""
    if isinstance(value, dict):
        items: Iterator[tuple[Any, Any]] = iter(value.items())
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def replaced(base: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return out


def embedded(base: dict[str, Any], path: tuple[Any, ...], fragment: Fragment) -> Body:
    """``base`` with the value at ``path`` replaced by the text of ``fragment``."""
    text = json.dumps(replaced(base, path, HOLE)).replace(json.dumps(HOLE), fragment.text, 1)
    refused = fragment.bad or len(path) + fragment.depth > MAX_DEPTH
    return Body(text.encode("utf-8", "surrogatepass"), JSON_TYPE, refused)


def whole(fragment: Fragment) -> Body:
    """The fragment as the entire body: refused unless it is an object within the bounds."""
    text = fragment.text
    refused = fragment.bad or fragment.depth > MAX_DEPTH or not text.startswith("{")
    return Body(text.encode("utf-8", "surrogatepass"), JSON_TYPE, refused and bool(text.strip()))


def with_duplicate(base: dict[str, Any], key: str, fragment: Fragment) -> Body:
    """``base`` with ``key`` given a second time."""
    text = json.dumps(base)[:-1] + f", {json.dumps(key)}: {fragment.text}}}"
    return Body(text.encode("utf-8", "surrogatepass"), JSON_TYPE, True)


BAD_BYTES = [
    b"\xff",
    b"\xfe",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xed\xa0\x80",
]


def with_bytes(body: Body, at: int, junk_bytes: bytes) -> Body:
    """Bytes inserted anywhere: refused when the result is not UTF-8 (surrogates pass, as in
    ``json.loads`` of bytes)."""
    at = min(at, len(body.content))
    content = body.content[:at] + junk_bytes + body.content[at:]
    try:
        content.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return Body(content, body.content_type, True)
    return Body(content, body.content_type, body.refused)


FORM_KEYS = ["a", "api_id", "message_uuid", "x%FF", "%ED%A0%80", "k+k", "", "%", "a%5B%5D"]
FORM_VALUES = ["1", "", "%FF%FE", "%ED%A0%80", "a+b", "%25", "=", "\u00e9", "x" * 50]


def form(fields: int, shift: int) -> Body:
    """A form of ``fields`` fields (repeated keys, bad escapes); 1000 is the receiver's bound."""
    text = "&".join(
        f"{FORM_KEYS[(i + shift) % len(FORM_KEYS)]}={FORM_VALUES[(i * 7 + shift) % len(FORM_VALUES)]}"
        for i in range(fields)
    )
    return Body(text.encode(), FORM_TYPE, bool(text))  # as JSON: refused, unless empty


forms = st.builds(form, st.integers(0, 3000) | st.sampled_from([999, 1000, 1001, 5000]), st.integers(0, 8))


def padded(base: dict[str, Any], size: int, inside: bool) -> Body:
    """``base`` grown to exactly ``size`` bytes: whitespace after it, or a long string in it."""
    text = json.dumps(base)
    if inside:
        text = text[:-1] + ', "pad": ""}'
        text = text[:-2] + "x" * max(0, size - len(text)) + '"}'
    return Body((text + " " * max(0, size - len(text))).encode(), JSON_TYPE, False)


sizes = st.sampled_from([LIMIT - 64, LIMIT - 1, LIMIT, LIMIT + 1, LIMIT + 64, 2 * LIMIT]) | st.integers(
    LIMIT - 2000, LIMIT + 2000
)
CONTENT_TYPES = [
    JSON_TYPE,
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    FORM_TYPE,
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
    "application/jsonx",
]


def is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == JSON_TYPE


def typed_values() -> st.SearchStrategy[Any]:
    """Values of every JSON type, the edge cases first."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**99), max_value=10**99),
        st.floats(allow_nan=False, allow_infinity=False),
        any_strings,
        st.lists(st.none() | st.integers() | any_strings, max_size=4),
        st.dictionaries(any_strings, st.none() | st.integers() | any_strings, max_size=4),
    )


def bodies(base: dict[str, Any] | None) -> st.SearchStrategy[Body]:
    """Everything hostile, built on ``base`` (an endpoint's valid body) where it has one."""
    base = base or {"a": 1}
    where = st.sampled_from([*paths(base), ("zz_unknown",)])
    json_bodies = st.one_of(
        st.builds(embedded, st.just(base), where, fragments),
        st.builds(embedded, st.just(base), where, valid_fragments),
        st.builds(embedded, st.just(base), where, deep),
        fragments.map(whole),
        st.builds(with_duplicate, st.just(base), st.sampled_from(sorted(base)), valid_fragments),
        st.builds(
            lambda path, value: Body(json.dumps(replaced(base, path, value)).encode(), JSON_TYPE, False),
            where,
            typed_values(),
        ),
        st.builds(padded, st.just(base), sizes, st.booleans()),
    )
    with_junk = st.builds(with_bytes, json_bodies, st.integers(0, 400), st.sampled_from(BAD_BYTES))
    others = st.one_of(
        forms,
        st.binary(max_size=3000).map(lambda b: Body(b, JSON_TYPE, False)),
        st.builds(with_bytes, forms, st.integers(0, 400), st.sampled_from(BAD_BYTES)),
    )
    return st.one_of(json_bodies, json_bodies, with_junk, others)


content_types = st.sampled_from(CONTENT_TYPES)


def relabeled(body: Body, content_type: str | None) -> Body:
    return body if content_type is None else body._replace(content_type=content_type)


def labeled(strategy: st.SearchStrategy[Body]) -> st.SearchStrategy[Body]:
    """Mostly the body's own content type, sometimes another one."""
    return st.builds(relabeled, strategy, st.none() | st.none() | st.none() | content_types)


# --- the app under test ----------------------------------------------------------------------------


@dataclass
class Hostile:
    client: httpx.AsyncClient
    redis: Redis
    settings: Settings
    subscription: str

    async def inbox(self) -> int:
        return int(await self.redis.xlen(self.settings.GATEWAY_KEY_PREFIX + "inbox"))

    async def last_entry(self) -> dict[str, Any]:
        [(_, fields)] = await self.redis.xrevrange(self.settings.GATEWAY_KEY_PREFIX + "inbox", count=1)
        entry: dict[str, Any] = json.loads(fields["e"])
        return entry


@pytest.fixture(scope="module")
async def hostile(redis_server: Any, postgres_server: Any) -> AsyncIterator[Hostile]:
    """One in-process app with every body-taking endpoint reachable: signatures checked, proxy
    passthrough and tokens on, no API rate limit (a 429 would hide the parser), Plivo refused on
    a closed port (creates answer 502)."""
    config = Settings(
        _env_file=None,
        REDIS_URL=redis_server.url,
        DATABASE_URL=postgres_server.url() + "?search_path=hostile",
        GATEWAY_KEY_PREFIX=f"hostile{uuid.uuid4().hex[:6]}:",
        PLIVO_AUTH_ID=AUTH_ID,
        PLIVO_AUTH_TOKEN=TOKEN,
        GATEWAY_API_KEYS=API_KEY,
        GATEWAY_PUBLIC_URL=PUBLIC_URL,
        GATEWAY_VERIFY_SIGNATURES=True,
        GATEWAY_MAX_BODY_BYTES=LIMIT,
        GATEWAY_ALLOW_PRIVATE_WEBHOOKS=True,
        GATEWAY_API_RATE_LIMIT=0,
        GATEWAY_PROXY_TOKEN_SECRET="hostile-proxy-secret-" + "y" * 20,
        GATEWAY_PROXY_PASSTHROUGH=True,
        PLIVO_API_URL="http://127.0.0.1:9",
        UPSTREAM_MAX_ATTEMPTS=1,
        UPSTREAM_RATE_LIMIT=0,
    )
    # capture_logs cannot see loggers cached on first use: the no-unhandled_error check would pass
    # blind. The tests run with structlog unconfigured (the CLI configures it, in its own process).
    assert not structlog.get_config()["cache_logger_on_first_use"], "structlog configured in-process"
    app = create_app(config)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client,
    ):
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        created = await client.post(
            "/v1/subscriptions",
            json={"url": HOOK, "event_types": ["*"]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert created.status_code == 201, created.text
        yield Hostile(client, redis, config, created.json()["subscription"]["id"])
        await redis.aclose()


# --- the API ----------------------------------------------------------------------------------------

WEBHOOK_TARGET = {"type": "webhook", "url": HOOK, "method": "POST"}
QUEUE_TARGET = {"type": "queue", "queue": "fuzz_results", "function": "on_result"}
BEARER = {"Authorization": f"Bearer {API_KEY}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{AUTH_ID}:{TOKEN}".encode()).decode()}


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str  # {sub} is the fixture's subscription
    auth: dict[str, str]
    base: dict[str, Any] | None  # a valid body; None: the endpoint reads no body
    success: int  # what ``base`` gets (502: Plivo, on its closed port, is called)
    allowed: frozenset[int]

    @property
    def parses_json(self) -> bool:
        return self.base is not None


def _endpoint(name: str, path: str, base: dict[str, Any] | None, success: int, *more: int) -> Endpoint:
    auth = BASIC if path.startswith("/v1/Account/") else BEARER
    body_codes = {400, 413, 415} if base is not None else set()
    return Endpoint(name, path, auth, base, success, frozenset({success, *body_codes, *more}))


ENDPOINTS = [
    _endpoint(
        "submit",
        "/v1/requests",
        {
            "method": "POST",
            "resource": "Message/",
            "params": {"src": "14155550100", "dst": "14155550101", "text": "hi"},
            "targets": [WEBHOOK_TARGET, QUEUE_TARGET],
            "metadata": {"order": "o-1"},
            "timeout": 60,
            "status_events": True,
            "callback_url": HOOK,
            "callback_method": "POST",
        },
        502,
    ),
    _endpoint(
        "create_subscription",
        "/v1/subscriptions",
        {
            "url": HOOK,
            "event_types": ["request.completed", "message.status"],
            "description": "fuzz",
            "retry_schedule": [0.5, 30],
            "rate_limit": 5,
        },
        201,
    ),
    _endpoint(
        "bulk_replay",
        "/v1/subscriptions/{sub}/replay",
        {"created_at__gte": "2026-01-01T00:00:00Z", "created_at__lte": "4102444800"},
        202,
    ),
    _endpoint(
        "proxy_token",
        "/v1/proxy_tokens",
        {"description": "fuzz", "targets": [WEBHOOK_TARGET, QUEUE_TARGET], "metadata": {"team": "a"}},
        201,
    ),
    _endpoint(
        "proxy",
        f"/v1/Account/{AUTH_ID}/Message/",
        {
            "src": "14155550100",
            "dst": "14155550101",
            "text": "hi",
            "url": HOOK,
            "callback_url": HOOK,
            "callback_method": "POST",
        },
        502,
    ),
    _endpoint("retry_delivery", "/v1/deliveries/dlv_none/retry", None, 404),
    _endpoint("replay_event", "/v1/events/evt_none/replay", None, 404),
    _endpoint("enable_subscription", "/v1/subscriptions/{sub}/enable", None, 200),
    _endpoint("rotate_secret", "/v1/subscriptions/{sub}/rotate-secret", None, 200),
]
JSON_ENDPOINTS = [e for e in ENDPOINTS if e.parses_json]


def _chunks(content: bytes, size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(content), size):
            yield content[start : start + size]

    return stream


async def post(
    hostile: Hostile, endpoint: Endpoint, body: Body, chunk: int | None = None
) -> tuple[httpx.Response, Events]:
    """Send ``body`` (in ``chunk``-byte pieces without Content-Length, if given); the answer
    and the log events it produced."""
    headers = {**endpoint.auth, "Content-Type": body.content_type} if body.content_type else endpoint.auth
    content: Any = body.content if chunk is None else _chunks(body.content, chunk)()
    with structlog.testing.capture_logs() as events:
        response = await hostile.client.post(
            endpoint.path.format(sub=hostile.subscription), content=content, headers=headers
        )
    return response, events


def describe(body: Body, response: httpx.Response) -> None:
    """What was sent, for ``--hypothesis-show-statistics``."""
    size = len(body.content)
    event(f"size {'over the limit' if size > LIMIT else 'over 64 KiB' if size > 65536 else 'under 64 KiB'}")
    event(f"refused as JSON: {body.refused}")
    event(f"answer {response.status_code}")


def check_api(endpoint: Endpoint, body: Body, response: httpx.Response, events: Events) -> None:
    where = (endpoint.name, body.content_type, body.content[:300], len(body.content))
    assert response.status_code in endpoint.allowed, (*where, response.status_code, response.text[:500])
    assert "Traceback" not in response.text and 'File "' not in response.text, where
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"api_id", "error"}, (*where, error)
        assert isinstance(error["error"], str) and error["error"], (*where, error)
    assert any(e["event"] == "api_request" for e in events), "log capture saw nothing"
    unhandled = [e for e in events if e["event"] == "unhandled_error" or e.get("exc_info")]
    assert not unhandled, (*where, unhandled)
    if endpoint.parses_json and is_json(body.content_type):
        if len(body.content) > LIMIT:
            assert response.status_code == 413, (*where, response.status_code, response.text[:300])
        elif body.refused:
            assert response.status_code == 400, (*where, response.status_code, response.text[:300])


def refused_bodies(base: dict[str, Any]) -> st.SearchStrategy[Body]:
    """JSON the strict parser refuses, within the size limit, built on ``base``."""
    where = st.sampled_from([*paths(base), ("zz_unknown",)])
    return st.one_of(
        st.builds(embedded, st.just(base), where, fragments),
        st.builds(embedded, st.just(base), where, deep.filter(lambda f: f.depth > MAX_DEPTH)),
        st.builds(with_duplicate, st.just(base), st.sampled_from(sorted(base)), fragments),
        st.builds(
            with_bytes,
            st.builds(embedded, st.just(base), where, valid_scalars),
            st.integers(0, 400),
            st.sampled_from(BAD_BYTES),
        ),
    ).filter(lambda b: b.refused and len(b.content) <= LIMIT)


# Built once: a strategy is described (repr) each time a filter retries, and these are large.
API_BODIES = {e.name: labeled(bodies(e.base)) for e in ENDPOINTS}
REFUSED_BODIES = {e.name: refused_bodies(e.base) for e in ENDPOINTS if e.base is not None}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
@settings(FUZZ, max_examples=45)
@given(data=st.data(), chunk=st.none() | st.none() | st.integers(1024, 70_000))
async def test_hostile_bodies_never_make_a_5xx(
    hostile: Hostile, endpoint: Endpoint, data: st.DataObject, chunk: int | None
) -> None:
    body = data.draw(API_BODIES[endpoint.name], label="body")
    response, events = await post(hostile, endpoint, body, chunk)
    describe(body, response)
    check_api(endpoint, body, response, events)


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.name)
@settings(FUZZ, max_examples=40)
@given(data=st.data())
async def test_json_the_strict_parser_refuses_is_a_400(
    hostile: Hostile, endpoint: Endpoint, data: st.DataObject
) -> None:
    """Deep, long numbers, constants, duplicates, junk, not UTF-8: 400 wherever it stands."""
    body = data.draw(REFUSED_BODIES[endpoint.name], label="body")
    response, events = await post(hostile, endpoint, body)
    check_api(endpoint, body, response, events)
    assert response.status_code == 400


# Every field of each body, replaced by a value of every JSON type (and the edge cases of each),
# and by each hostile shape; the shapes at depth 1 test the depth bound from both sides.
TYPED = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    10**99,
    -(10**99),  # 101 characters
    1.5,
    -0.0,
    1e308,
    5e-324,
    *NASTY_STRINGS,
    [],
    [None, 1, "a"],
    {},
    {"a": {"b": [1]}},
]
NULL = Fragment("null", False, 0)
SHAPES = [
    _deep(MAX_DEPTH - 1, ["list"], NULL),  # at the top level: exactly the bound
    _deep(MAX_DEPTH, ["dict"], NULL),
    _deep(20_000, ["list"], NULL),
    _deep(50_000, ["list", "list", "dict"], NULL),
    _number("9" * 5000),
    _number("9" * MAX_NUMBER_CHARS),
    _number("-" + "9" * MAX_NUMBER_CHARS),
    _number("1e400"),
    _number("-1e400"),
    *(Fragment(c, True, 0) for c in ("NaN", "Infinity", "-Infinity")),
    _object([(KEYS[0], NULL), (KEYS[1], NULL)]),  # "a" twice, once as an escape
    _object([(KEYS[2], NULL), (KEYS[2], _array([]))]),
    Fragment('"\\ud800"', False, 0),  # valid JSON; not a Unicode string
    Fragment('{"a":1,}', True, 1),
]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _typed(value: Any) -> Fragment:
    text = json.dumps(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(text)
    return Fragment(text, False, _depth(value))


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS, ids=lambda e: e.name)
async def test_every_field_with_every_type_and_shape(hostile: Hostile, endpoint: Endpoint) -> None:
    assert endpoint.base is not None
    response, events = await post(
        hostile, endpoint, Body(json.dumps(endpoint.base).encode(), JSON_TYPE, False)
    )
    check_api(endpoint, Body(b"", JSON_TYPE, False), response, events)
    assert response.status_code == endpoint.success, response.text  # else the mutations test nothing
    failures = []
    values = [*map(_typed, TYPED), *SHAPES]
    for path, value in itertools.product([*paths(endpoint.base), ("zz_unknown",)], values):
        body = embedded(endpoint.base, path, value)
        response, events = await post(hostile, endpoint, body)
        try:
            check_api(endpoint, body, response, events)
        except AssertionError:
            failures.append(f"{path} = {_short(value.text)}: {response.status_code} {response.text[:120]}")
    if failures:
        pytest.fail(f"{endpoint.name}, {len(failures)} failures:\n" + "\n".join(failures))


# --- the receiver ---------------------------------------------------------------------------------

CALLBACK = {"api_id": "a1", "message_uuid": ["m1"], "status": "delivered", "to": "14155550101"}
SIGNATURE_HEADERS = ["X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce", "X-Plivo-Signature-V2"]
SIGNATURE_HEADERS += ["X-Plivo-Signature-V2-Nonce", "X-Plivo-Signature-Ma-V3", "X-Plivo-Signature-Ma-V2"]
_serial = itertools.count()
_run = uuid.uuid4().hex[:8]

callback_bodies = labeled(
    st.one_of(
        bodies(CALLBACK),
        forms,
        st.builds(padded, st.just(CALLBACK), st.integers(LIMIT - 2000, LIMIT), st.booleans()),
    )
)
signature_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
# A real V2 signature, but for another URL: as good as junk.
elsewhere = sign_v2("http://elsewhere.test/callbacks/plivo", "n1", TOKEN)


JUNK_V3 = {"X-Plivo-Signature-V3": "junk", "X-Plivo-Signature-V3-Nonce": "1"}


def _signed_v2() -> dict[str, str]:
    """Headers of a valid V2 signature, with a nonce never used before."""
    nonce = f"{_run}-{next(_serial)}"
    return {
        "X-Plivo-Signature-V2": sign_v2(PUBLIC_URL + "/callbacks/plivo", nonce, TOKEN),
        "X-Plivo-Signature-V2-Nonce": nonce,
    }


async def callback(
    hostile: Hostile, body: Body, method: str, query: str, headers: dict[str, str]
) -> tuple[httpx.Response, Events]:
    if body.content_type:
        headers = {**headers, "Content-Type": body.content_type}
    with structlog.testing.capture_logs() as events:
        response = await hostile.client.request(
            method,
            "/callbacks/plivo" + (f"?{query}" if query else ""),
            content=body.content if method == "POST" else b"",
            headers=headers,
        )
    return response, events


def check_callback(body: Body, response: httpx.Response, events: Events, sent: tuple[Any, ...] = ()) -> None:
    where = (
        *sent,
        body.content_type,
        body.content[:300],
        len(body.content),
        response.status_code,
        response.text[:300],
    )
    assert "Traceback" not in response.text, where
    if response.status_code >= 400:
        error = response.json()
        assert set(error) == {"api_id", "error"} and error["error"], where
    unhandled = [e for e in events if e["event"] == "unhandled_error" or e.get("exc_info")]
    assert not unhandled, (*where, unhandled)


@settings(FUZZ, max_examples=150)
@given(
    body=callback_bodies | st.builds(padded, st.just(CALLBACK), sizes, st.booleans()),
    method=st.sampled_from(["POST", "POST", "GET"]),
    query=st.sampled_from(["", "cg_ref=abc", "a=%FF&b=%ED%A0%80", "&" * 1200])
    | st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40),
    headers=st.dictionaries(
        st.sampled_from(SIGNATURE_HEADERS), signature_values | st.just(elsewhere), max_size=4
    ),
)
async def test_unsigned_callbacks_are_refused_and_store_nothing(
    hostile: Hostile, body: Body, method: str, query: str, headers: dict[str, str]
) -> None:
    before = await hostile.inbox()
    response, events = await callback(hostile, body, method, query, headers)
    describe(body, response)
    sent = (method, query, headers)  # hypothesis leaves the arguments of async tests out of its report
    check_callback(body, response, events, sent)
    assert 400 <= response.status_code < 500, (
        *sent,
        _short(body.content),
        response.status_code,
        response.text,
    )
    assert await hostile.inbox() == before, sent


@settings(FUZZ, max_examples=150)
@given(
    body=callback_bodies,
    method=st.sampled_from(["POST", "POST", "POST", "GET"]),
    query=st.sampled_from(["", "a=%FF&b=%ED%A0%80", "x=1&" * 1200, "cg_ref=abc"]),
)
async def test_signed_callbacks_of_any_shape_are_stored(
    hostile: Hostile, body: Body, method: str, query: str
) -> None:
    """V2 signs the URL and nonce, not the payload: whatever the payload, Plivo signed it, so it
    is kept (raw if it does not parse), never refused into oblivion; over the size limit, 413."""
    headers = _signed_v2()
    query = f"n={headers['X-Plivo-Signature-V2-Nonce']}&{query}"  # a new callback: not a duplicate
    before = await hostile.inbox()
    response, events = await callback(hostile, body, method, query, headers)
    describe(body, response)
    sent = (method, query[:100], _short(body.content))
    check_callback(body, response, events, sent)
    if len(body.content) > LIMIT and method == "POST":
        assert response.status_code == 413, (*sent, response.text)
        assert await hostile.inbox() == before
        return
    assert response.status_code == 200, (*sent, response.text)
    assert await hostile.inbox() == before + 1, sent
    entry = await hostile.last_entry()
    assert entry["sv"] == "v2"
    assert entry["enc"] != "raw" or entry["perr"], entry


async def test_every_callback_field_with_every_type_and_shape(hostile: Hostile) -> None:
    """Each field of a callback given each value and shape, and the same again as a form with
    thousands of fields and as bytes that are not UTF-8: unsigned, 4xx and not stored; V2-signed,
    200 and stored."""
    variants = [
        embedded(CALLBACK, path, value)
        for path, value in itertools.product(
            [*paths(CALLBACK), ("zz_unknown",)], [*map(_typed, TYPED), *SHAPES]
        )
    ]
    variants += [form(n, shift) for n in (999, 1000, 1001, 5000) for shift in (0, 3)]
    variants += [with_bytes(variants[0], at, junk) for at in (0, 10, 10_000) for junk in BAD_BYTES]
    variants += [padded(CALLBACK, LIMIT, inside) for inside in (False, True)]
    failures = []
    for number, body in enumerate(variants):
        query = f"n={number}&run={_run}"
        before = await hostile.inbox()
        unsigned, events = await callback(hostile, body, "POST", query, JUNK_V3)
        signed, more = await callback(hostile, body, "POST", query, _signed_v2())
        try:
            check_callback(body, unsigned, events)
            check_callback(body, signed, more)
            assert 400 <= unsigned.status_code < 500
            assert signed.status_code == 200
            assert await hostile.inbox() == before + 1
        except AssertionError:
            failures.append(f"{_short(body.content)}: {unsigned.status_code}, {signed.status_code}")
    if failures:
        pytest.fail(f"{len(failures)} failures (unsigned, signed):\n" + "\n".join(failures))


@settings(FUZZ, max_examples=20)
@given(size=st.integers(LIMIT + 1, 3 * LIMIT), chunk=st.none() | st.integers(1024, 70_000))
async def test_signed_callbacks_over_the_limit_are_413(
    hostile: Hostile, size: int, chunk: int | None
) -> None:
    headers = {**_signed_v2(), "Content-Type": JSON_TYPE}
    content = padded(CALLBACK, size, inside=True).content
    before = await hostile.inbox()
    response = await hostile.client.post(
        "/callbacks/plivo", content=content if chunk is None else _chunks(content, chunk)(), headers=headers
    )
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"api_id", "error"}
    assert await hostile.inbox() == before
