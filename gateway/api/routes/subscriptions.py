"""Subscriptions: webhook endpoints that receive every event of the types they name."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypedDict

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.api.body import read_json, validation_message
from gateway.api.checks import enable_first, time_ms
from gateway.api.deps import ApiKey, State
from gateway.api.pagination import page
from gateway.api.state import GatewayState
from gateway.domain.errors import BadRequest, NotFound, new_api_id
from gateway.domain.events import iso_ms
from gateway.domain.subscriptions import Subscription
from gateway.services import netguard
from gateway.services.webhook_policy import https_refusal
from gateway.store.delivery import DeliveryQuery

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])

EVENT_TYPES = frozenset(
    {
        "request.completed",
        "request.timed_out",
        "message.status",
        "call.status",
        "callback.unmatched",
        "subscription.disabled",  # operator event: only to subscriptions that name it
        "*",
    }
)
MAX_DELAY_S = 7 * 86400


class SubscriptionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    url: str = Field(max_length=2048)
    event_types: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES))
    description: str = Field(default="", max_length=500)
    retry_schedule: list[float] | None = Field(default=None, min_length=1, max_length=20)
    rate_limit: float | None = Field(default=None, gt=0, le=10_000)

    @field_validator("event_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - EVENT_TYPES)
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}"
            )
        return sorted(set(value))

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(d < 0 or d > MAX_DELAY_S for d in value):
            raise ValueError(f"delays must be between 0 and {MAX_DELAY_S} seconds")
        return value


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    created_at__gte: str | None = None
    created_at__lte: str | None = None


async def json_body(request: Request, state: GatewayState, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object in the body (415 for another type; ``optional``: an empty body is {})."""
    return await read_json(request, state.settings, optional=optional)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


class SubscriptionView(TypedDict):
    """A subscription as the API shows it; ``secret`` and when the previous one stops signing
    only where its secret is shown."""

    id: str
    url: str
    event_types: list[str]
    description: str
    status: str
    retry_schedule: list[float] | None
    rate_limit: float | None
    created_at: str | None
    updated_at: str | None
    disabled_at: str | None
    disabled_reason: str | None
    secret: NotRequired[str | None]
    previous_secret_expires_at: NotRequired[str | None]


def subscription_view(sub: Subscription, *, with_secret: bool) -> SubscriptionView:
    view: SubscriptionView = {
        "id": sub.id,
        "url": sub.url,
        "event_types": list(sub.event_types),
        "description": sub.description,
        "status": sub.status,
        "retry_schedule": None if sub.retry_schedule is None else list(sub.retry_schedule),
        "rate_limit": sub.rate_limit,
        "created_at": _iso(sub.created_at),
        "updated_at": _iso(sub.updated_at),
        "disabled_at": _iso(sub.disabled_at),
        "disabled_reason": sub.disabled_reason or None,
    }
    if with_secret:
        held = sub.secrets
        view["secret"] = held[0].secret if held else None
        view["previous_secret_expires_at"] = iso_ms(held[1].expires_at) if len(held) > 1 else None
    return view


async def _found(state: GatewayState, sub_id: str) -> Subscription:
    sub = await state.deliveries.get_subscription(sub_id)
    if sub is None:
        raise NotFound(f"no subscription with id {sub_id}")
    return sub


@router.post("", status_code=201)
async def create_subscription(request: Request, state: State, _: ApiKey) -> JSONResponse:
    """Subscribe a webhook URL to event types; the answer holds its whsec_ signing secret."""
    try:
        body = SubscriptionBody.model_validate(await json_body(request, state))
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc
    settings = state.settings
    why = await netguard.refusal(
        body.url,
        allow_private=settings.GATEWAY_ALLOW_PRIVATE_WEBHOOKS,
        allow_cidrs=settings.GATEWAY_WEBHOOK_ALLOW_CIDRS,
    )
    why = https_refusal(settings, body.url) or why
    if why:
        raise BadRequest(f"url: {why}")
    sub = await state.deliveries.create_subscription(
        url=body.url,
        event_types=body.event_types,
        description=body.description,
        retry_schedule=body.retry_schedule,
        rate_limit=body.rate_limit,
    )
    content = {
        "api_id": new_api_id(),
        "message": "subscription created",
        "subscription": subscription_view(sub, with_secret=True),
    }
    return JSONResponse(content, status_code=201, headers={"Location": f"/v1/subscriptions/{sub.id}"})


@router.get("")
async def list_subscriptions(
    state: State,
    _: ApiKey,
    limit: Annotated[int, Query(ge=1, le=20)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Subscriptions, newest first (without their secrets)."""
    total, subs = await state.deliveries.list_subscriptions(offset, limit)
    meta = page("/v1/subscriptions", limit, offset, total, {})
    objects = [subscription_view(sub, with_secret=False) for sub in subs]
    return {"api_id": new_api_id(), "message": "subscriptions listed", **meta, "objects": objects}


@router.get("/{sub_id}")
async def get_subscription(sub_id: str, state: State, _: ApiKey) -> dict[str, Any]:
    """One subscription, with its current signing secret."""
    view = subscription_view(await _found(state, sub_id), with_secret=True)
    return {"api_id": new_api_id(), "message": "subscription found", "subscription": view}


@router.delete("/{sub_id}", status_code=204)
async def delete_subscription(sub_id: str, state: State, _: ApiKey) -> Response:
    """Delete a subscription; its pending deliveries end as failed."""
    if not await state.deliveries.delete_subscription(sub_id):
        raise NotFound(f"no subscription with id {sub_id}")
    return Response(status_code=204)


@router.post("/{sub_id}/rotate-secret")
async def rotate_secret(sub_id: str, state: State, _: ApiKey) -> dict[str, Any]:
    """Give a subscription a new secret; the old one keeps signing for the rotation grace period."""
    grace = state.settings.GATEWAY_SECRET_ROTATION_GRACE
    if await state.deliveries.rotate_secret(sub_id, grace) is None:
        raise NotFound(f"no subscription with id {sub_id}")
    view = subscription_view(await _found(state, sub_id), with_secret=True)
    return {"api_id": new_api_id(), "message": "secret rotated", "subscription": view}


@router.post("/{sub_id}/enable")
async def enable_subscription(sub_id: str, state: State, _: ApiKey) -> dict[str, Any]:
    """Re-enable a subscription that was disabled (410 Gone, or failing for too long): it matches
    new events again, with a fresh breaker. Its failed deliveries stay failed: replay them with
    ``POST /v1/subscriptions/{id}/replay``."""
    result = await state.deliveries.enable_subscription(sub_id)
    if result == 0:
        raise NotFound(f"no subscription with id {sub_id}")
    # Idempotent: enabling an active subscription changes nothing and says so.
    message = "subscription enabled" if result == 1 else "subscription was active already"
    view = subscription_view(await _found(state, sub_id), with_secret=False)
    return {"api_id": new_api_id(), "message": message, "subscription": view}


@router.post("/{sub_id}/replay", status_code=202)
async def bulk_replay(sub_id: str, request: Request, state: State, _: ApiKey) -> JSONResponse:
    """Re-queue the failed deliveries of a subscription in a time range (capped per call)."""
    try:
        body = ReplayBody.model_validate(await json_body(request, state, optional=True))
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc
    if (await _found(state, sub_id)).status == "disabled":
        raise enable_first(sub_id)
    cap = state.settings.GATEWAY_BULK_REPLAY_MAX
    query = DeliveryQuery(
        status="failed",
        subscription=sub_id,
        since_ms=time_ms("created_at__gte", body.created_at__gte),
        until_ms=time_ms("created_at__lte", body.created_at__lte),
        limit=cap,
    )
    total, ids = await state.deliveries.query(query)
    queued = [d for d in ids if await state.deliveries.rearm(d) >= 0]
    content = {
        "api_id": new_api_id(),
        "message": "replay queued",
        "subscription_id": sub_id,
        "replayed": len(queued),
        "remaining": max(0, total - len(ids)),
    }
    return JSONResponse(content, status_code=202)
