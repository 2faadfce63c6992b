"""SSRF guard for webhook targets: refuse addresses inside the operator's network.

A target host is resolved and every address it resolves to must be public. Loopback, private
(RFC 1918, ULA), link-local (which holds cloud metadata at 169.254.169.254), multicast, reserved,
unspecified, CGNAT and IPv4-mapped/compat forms of those are refused unless private webhooks are
explicitly allowed, or the address falls in an allowlisted CIDR (``GATEWAY_WEBHOOK_ALLOW_CIDRS``).

The check runs twice: when a target is accepted (``refusal``, a clear 400 for the user) and again
when the worker opens the connection (``GuardedResolver``). The second one is what counts: a name
that resolved to a public address at subscription time may resolve to 127.0.0.1 a minute later
(DNS rebinding), so the worker resolves once, checks the answers and connects to the checked
address itself, never letting the TCP layer resolve the name again (``GuardedResolver``). TLS
still verifies the certificate against the host name (aiohttp passes it as SNI / server_hostname).

Both checks also refuse a host written as a number in any form but a dotted quad (``2130706433``,
``127.1``, ``0177.0.0.1``, ``0x7f.1``, ``127.0.0.1.``): ``inet_aton``, ``getaddrinfo`` and browsers
read those as IPv4 addresses while ``ipaddress`` does not, so a check built on ``ipaddress`` would
take them for names, and aiohttp before 3.14.1 connects to the digit-only ones without asking the
resolver at all. No real name looks like that (a top-level label is never all-numeric).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.infra import keepalive

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")

# One label as inet_aton / the WHATWG URL parser read a number: decimal (octal with a leading 0)
# or 0x-hex, ASCII only ("0x" alone is 0 to them).
_NUMBER_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def is_numeric_form(host: str) -> bool:
    """Whether ``host`` reads as an IPv4 number without being a canonical dotted quad.

    Follows the WHATWG URL parser's rule: a host whose last label is a number is an IPv4
    address, so the whole host is judged as one, whatever its other labels."""
    if ":" in host:  # IPv6 (bracketed or not): ipaddress is the only parser of those
        return False
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # one trailing dot is still an address to those parsers
    if not _NUMBER_LABEL.fullmatch(labels[-1]):
        return False
    try:
        ipaddress.IPv4Address(host)  # refuses leading zeros, short forms and trailing dots
    except ValueError:
        return True
    return False


def numeric_form_refusal(host: str) -> str | None:
    """Why ``host`` may not be used as written, when it is an IPv4 number in a legacy form."""
    if is_numeric_form(host):
        return f"host {host!r} is an IPv4 address in a legacy numeric form; write it as a dotted quad"
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return is_public(mapped)
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Policy:
    """Which addresses webhook traffic may reach."""

    allow_private: bool = False
    allow_cidrs: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=resolve)

    @classmethod
    def build(
        cls, *, allow_private: bool, allow_cidrs: Iterable[str] = (), resolver: Resolver = resolve
    ) -> Policy:
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in allow_cidrs)
        return cls(allow_private, networks, resolver)

    def permits(self, address: IPAddress) -> bool:
        if self.allow_private or is_public(address):
            return True
        plain = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        candidates = [address] if plain is None else [address, plain]
        return any(a in net for a in candidates for net in self.allow_cidrs if a.version == net.version)

    async def checked(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host``; raises ``Blocked`` if any of them is not permitted."""
        legacy = numeric_form_refusal(host)
        if legacy:
            # Before resolving: the platform resolver would turn it into an address unseen here.
            raise Blocked(legacy)
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise Blocked(f"host {host!r} does not resolve") from exc
        if not addresses:
            raise Blocked(f"host {host!r} does not resolve")
        for address in addresses:
            if not self.permits(address):
                raise Blocked(f"{host!r} resolves to a non-public address ({address})")
        return addresses


# Named in refusals, so that whoever meets one knows what an operator can change.
ALLOW_SETTINGS = (
    "non-public targets are refused unless allowed by GATEWAY_WEBHOOK_ALLOW_CIDRS (some networks) "
    "or GATEWAY_ALLOW_PRIVATE_WEBHOOKS=true (all)"
)


class Blocked(OSError):
    """A connection the SSRF guard refused (reported by the client as a connection error)."""


async def refusal(
    url: str,
    *,
    allow_private: bool,
    allow_cidrs: Sequence[str] = (),
    resolver: Resolver = resolve,
) -> str | None:
    """Why ``url`` may not be a webhook target, or None when it may."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    legacy = numeric_form_refusal(parts.hostname)
    if legacy:
        # Private targets allowed or not: aiohttp (>= 3.14.1) refuses to connect to these.
        return legacy
    if allow_private:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "has an invalid port"
    policy = Policy.build(allow_private=False, allow_cidrs=allow_cidrs, resolver=resolver)
    try:
        await policy.checked(parts.hostname, port)
    except Blocked as exc:
        why = str(exc).replace(f"{parts.hostname!r} resolves", "resolves")
        if "non-public" in why:
            why += f"; {ALLOW_SETTINGS}"
        return why
    return None


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that answers only with addresses the policy permits.

    The connector connects to exactly the addresses returned here (and caches them for a few
    seconds), so a name is never resolved again behind the check's back. TLS still verifies the
    certificate against the host name: ``hostname`` is kept for SNI and verification."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await self.policy.checked(host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Answer:
    """What a webhook endpoint answered: status, the headers we look at, the body (capped)."""

    status: int
    retry_after: str | None
    body: bytes


class ExchangeError(Exception):
    """No answer: refused by the guard, connection failed, timed out or broke mid-way."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class NoSlot(Exception):
    """Every connection of the pool stayed in use for the whole wait: the exchange was not made."""


class WebhookClient:
    """The HTTP client for webhook deliveries, on aiohttp (several times faster than httpx's pool
    under concurrency: docs/performance.md): SSRF-guarded at connect time, no redirects, no proxy
    from the environment, no content decoding, the answer read up to a limit, one deadline for
    connect + send + read.

    The deadline starts only once a connection of the pool (``max_connections``) is ours. aiohttp
    would count the wait for one in its ``total`` timeout: with slow endpoints holding the pool,
    healthy ones would be recorded as timing out (their retries used up, their breakers fed, their
    subscriptions even disabled). So exchanges first take a slot of a semaphore as large as the
    pool, waiting at most ``slot_wait`` (``NoSlot`` after that: the caller puts the attempt off,
    uncounted); the pool itself then never makes anyone wait."""

    def __init__(
        self, policy: Policy, *, timeout: float, max_connections: int, slot_wait: float = 2.5
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_connections = max_connections
        self.slot_wait = slot_wait
        self._slots = asyncio.Semaphore(max_connections)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy),
                limit=self.max_connections,
                keepalive_timeout=keepalive.IDLE_SECONDS,
                ttl_dns_cache=10,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
                trust_env=False,
                # Receivers' cookies are never kept (nor sent to anyone), and no default headers
                # we do not mean to send (our own User-Agent comes with each request).
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("Accept-Encoding", "Accept", "User-Agent"),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: int = 65536,
        encoded: bool = False,
    ) -> Answer:
        """One exchange. ``encoded``: ``url`` is sent exactly as given (a signed URL)."""
        session = self._open()
        target = _url(url, encoded)
        if target.scheme not in {"http", "https"} or not target.host:
            raise ExchangeError("must be an absolute http(s) URL")
        refused = self._literal_refusal(target.host)
        if refused:
            raise ExchangeError(refused)
        await self._slot()
        try:
            # The session's ``total`` timeout is the attempt's one deadline: connect, send and
            # reading the answer (aiohttp: "the whole operation including ... response reading").
            async with session.request(
                method, target, data=body, headers=headers, allow_redirects=False
            ) as response:
                answer = await _read_capped(response, limit)
                return Answer(response.status, response.headers.get("retry-after"), answer)
        except TimeoutError as exc:
            raise ExchangeError(f"timeout: {type(exc).__name__}", timeout=True) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise ExchangeError(_describe(exc)) from exc
        finally:
            self._slots.release()  # after the connection went back to the pool

    async def _slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        try:
            async with asyncio.timeout(self.slot_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise NoSlot(f"all {self.max_connections} connections busy for {self.slot_wait:g} s") from None

    def _literal_refusal(self, host: str) -> str | None:
        """aiohttp connects to an IP literal without asking the resolver: check it here."""
        legacy = numeric_form_refusal(host)
        if legacy:
            # aiohttp < 3.14.1 takes these for literals too, and a URL stored under an older,
            # looser policy may carry one: refused here whatever aiohttp does with it.
            return f"Blocked: {legacy}"
        if self.policy.allow_private:
            return None
        if "%" in host:  # a zone id: link-local, never public
            return f"Blocked: {host!r} is a non-public address"
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None  # a name: GuardedResolver checks what it resolves to
        if self.policy.permits(address):
            return None
        return f"Blocked: {host!r} is a non-public address"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WebhookClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@functools.lru_cache(maxsize=1024)
def _url(url: str, encoded: bool) -> URL:
    # Webhook URLs repeat (a subscription's, a request's): parse each once. URLs are immutable.
    return URL(url, encoded=encoded)


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most ``limit`` bytes of the answer; the rest is never read (the connection is then
    closed rather than reused)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await response.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or getattr(exc, "os_error", None)
    if isinstance(cause, Blocked):
        return f"{type(exc).__name__}: {cause}"[:200]
    return f"{type(exc).__name__}: {exc}"[:200]


def webhook_client(
    policy: Policy, *, timeout: float, max_connections: int, slot_wait: float = 2.5
) -> WebhookClient:
    """The HTTP client for webhook deliveries: SSRF-guarded at connect time, redirects refused."""
    return WebhookClient(policy, timeout=timeout, max_connections=max_connections, slot_wait=slot_wait)
