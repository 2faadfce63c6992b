"""Which webhook URLs the gateway agrees to call: the SSRF guard plus the https-only option."""

from __future__ import annotations

from gateway.services import netguard
from gateway.settings import Settings


def https_refusal(settings: Settings, url: str) -> str | None:
    """With GATEWAY_WEBHOOK_HTTPS_ONLY, why a plain-http URL is refused (None otherwise)."""
    if settings.GATEWAY_WEBHOOK_HTTPS_ONLY and not url.lower().startswith("https://"):
        return "must be an https:// URL (GATEWAY_WEBHOOK_HTTPS_ONLY is on)"
    return None


async def refusal(settings: Settings, url: str) -> str | None:
    """Why ``url`` may not be a webhook target, or None when it may."""
    why = https_refusal(settings, url)
    if why:
        return why
    return await netguard.refusal(
        url,
        allow_private=settings.GATEWAY_ALLOW_PRIVATE_WEBHOOKS,
        allow_cidrs=settings.GATEWAY_WEBHOOK_ALLOW_CIDRS,
    )
