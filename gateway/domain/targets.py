"""Where an event goes: the targets of a request and of a subscription.

A target is stored as JSON twice: in the request record (``targets``) and in each delivery record
(``target``); a delivery's JSON is exactly ``to_json()``, and ``target_from_json(t.to_json()) == t``.
The four kinds and their JSON (keys in this order):

* ``WebhookTarget``: a request's own URL, ``{"type": "webhook", "url", "method"}`` (``GET`` puts the
  event in the ``event`` query parameter), signed with the gateway's ``GATEWAY_WEBHOOK_SECRET``.
* ``SubscriptionTarget``: a subscription's delivery, ``{"type": "webhook", "url", "subscription"}``;
  sent to the subscription's current URL, signed with its secrets.
* ``QueueTarget``: a job in the user's arq queue, ``{"type": "queue", "queue", "function"}``.
* ``RelayTarget``: a drop-in proxy client's callback URL, ``{"type": "plivo_relay", "url", "method",
  "token_id"}``, sent as Plivo's form with Plivo's V3 signature (``workers.relay``).

``key`` names a target within an event: one delivery per event and key (``workers.delivery``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WEBHOOK = "webhook"
QUEUE = "queue"
RELAY = "plivo_relay"


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    method: str = "POST"

    @property
    def key(self) -> str:
        return f"webhook:{self.url}"

    def to_json(self) -> dict[str, str]:
        return {"type": WEBHOOK, "url": self.url, "method": self.method}


@dataclass(frozen=True, slots=True)
class SubscriptionTarget:
    subscription: str
    url: str  # the URL when the delivery was created; it is sent to the subscription's current one

    @property
    def key(self) -> str:
        return f"sub:{self.subscription}"

    def to_json(self) -> dict[str, str]:
        return {"type": WEBHOOK, "url": self.url, "subscription": self.subscription}


@dataclass(frozen=True, slots=True)
class QueueTarget:
    queue: str
    function: str

    @property
    def key(self) -> str:
        return f"queue:{self.queue}:{self.function}"

    def to_json(self) -> dict[str, str]:
        return {"type": QUEUE, "queue": self.queue, "function": self.function}


@dataclass(frozen=True, slots=True)
class RelayTarget:
    url: str
    method: str = "POST"
    token_id: str = ""  # the proxy token the client authenticated with ("" for the real token)

    @property
    def key(self) -> str:
        return f"relay:{self.url}"

    def to_json(self) -> dict[str, str]:
        return {"type": RELAY, "url": self.url, "method": self.method, "token_id": self.token_id}


Target = WebhookTarget | SubscriptionTarget | QueueTarget | RelayTarget


def target_from_json(raw: Mapping[str, Any]) -> Target:
    """A target from its stored JSON (an object); ValueError for an unknown kind."""
    kind = raw.get("type")
    if raw.get("subscription"):
        return SubscriptionTarget(str(raw["subscription"]), str(raw.get("url") or ""))
    if kind == WEBHOOK:
        return WebhookTarget(str(raw["url"]), str(raw.get("method") or "POST"))
    if kind == QUEUE:
        return QueueTarget(str(raw["queue"]), str(raw["function"]))
    if kind == RELAY:
        return RelayTarget(str(raw["url"]), str(raw.get("method") or "POST"), str(raw.get("token_id") or ""))
    raise ValueError(f"unknown target type: {kind!r}")


def targets_from_json(raw: Iterable[Mapping[str, Any]]) -> list[Target]:
    return [target_from_json(t) for t in raw]
