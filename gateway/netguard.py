"""SSRF guard for webhook targets: refuse addresses inside the operator's network.

A target host is resolved and every address it resolves to must be public. Loopback, private
(RFC 1918, ULA), link-local (which holds cloud metadata at 169.254.169.254), multicast, reserved,
unspecified, CGNAT and IPv4-mapped/compat forms of those are refused unless private webhooks are
explicitly allowed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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


async def refusal(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` may not be a webhook target, or None when it may."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "must not carry credentials"
    if allow_private:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = await resolve(parts.hostname, port)
    except OSError:
        return f"host {parts.hostname!r} does not resolve"
    for address in addresses:
        if not is_public(address):
            return f"resolves to a non-public address ({address})"
    return None
