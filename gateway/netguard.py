"""SSRF guard for webhook targets: refuse addresses inside the operator's network.

A target host is resolved and every address it resolves to must be public. Loopback, private
(RFC 1918, ULA), link-local (which holds cloud metadata at 169.254.169.254), multicast, reserved,
unspecified, CGNAT and IPv4-mapped/compat forms of those are refused unless private webhooks are
explicitly allowed, or the address falls in an allowlisted CIDR (``GATEWAY_WEBHOOK_ALLOW_CIDRS``).

The check runs twice: when a target is accepted (``refusal``, a clear 400 for the user) and again
when the worker opens the connection (``GuardedBackend``). The second one is what counts: a name
that resolved to a public address at subscription time may resolve to 127.0.0.1 a minute later
(DNS rebinding), so the worker resolves once, checks the answers and connects to the checked
address itself, never letting the TCP layer resolve the name again. TLS still verifies the
certificate against the host name (httpcore passes it as SNI / server_hostname separately).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


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


class Blocked(httpcore.ConnectError):
    """A connection the SSRF guard refused (httpx reports it as ``httpx.ConnectError``)."""


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
        return str(exc).replace(f"{parts.hostname!r} resolves", "resolves")
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks and connects to the checked address."""

    def __init__(self, policy: Policy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.policy.checked(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Blocked("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guarded backend; no proxy, no environment, no redirects."""

    def __init__(self, policy: Policy, *, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx has no parameter for the network backend: replace its pool with an equivalent
        # one that uses ours (same limits; http/1.1 only, like the default).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def webhook_client(policy: Policy, *, timeout: float, max_connections: int) -> httpx.AsyncClient:
    """The HTTP client for webhook deliveries: SSRF-guarded at connect time, redirects refused."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, limits=limits),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
    )
