"""The drop-in proxy (Plivo's API, forwarded) and the tokens that authenticate it."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.api import proxy, ratelimit_keys
from gateway.api.body import media_type, read_limited, validation_message
from gateway.api.deps import ApiKey, State
from gateway.api.models import Target, WebhookTarget
from gateway.domain.callbacks import parse_json
from gateway.domain.errors import BadRequest, NotFound, UnsupportedMediaType, new_api_id
from gateway.domain.events import iso_ms
from gateway.infra import logs
from gateway.services import queue_names
from gateway.services.proxy_tokens import (
    DEFAULT_RESOURCES,
    MAX_RESOURCES,
    derive,
    new_token_id,
    resource_prefix,
    token_hash,
)
from gateway.services.webhook_policy import refusal
from gateway.store import now_ms

router = APIRouter(prefix="/v1/Account", tags=["proxy"])
tokens_router = APIRouter(prefix="/v1/proxy_tokens", tags=["proxy"])
log = logs.get("gateway.api.proxy")

PASSED_HEADERS = ("retry-after",)


PATH = "/{auth_id}/{resource:path}"


# One operation per method: OpenAPI wants a distinct operation id for each.
@router.get(PATH, operation_id="proxy_get")
@router.post(PATH, operation_id="proxy_post")
@router.delete(PATH, operation_id="proxy_delete")
async def forward(auth_id: str, resource: str, request: Request, state: State) -> Response:
    """Plivo's API, drop-in: forwarded upstream; async callbacks come back re-signed to the client."""
    caller = await proxy.authenticate(request, state, auth_id)
    proxy.authorize(caller, resource)
    resource = proxy.check_resource(resource)
    params = await proxy.read_params(request, state)
    method = request.method
    is_async = "callback_url" in (params if isinstance(params, dict) else dict(params))
    if is_async:
        as_dict = params if isinstance(params, dict) else dict(params)
        reply = await proxy.forward_async(state, method, resource, as_dict, caller)
    else:
        reply = await proxy.forward(state, method, resource, params)
    log.info("proxied", resource=resource, upstream=reply.status_code, mode="async" if is_async else "sync")
    headers = {name: reply.headers[name] for name in PASSED_HEADERS if name in reply.headers}
    return Response(
        reply.content,
        status_code=reply.status_code,
        media_type=reply.headers.get("content-type"),
        headers=headers,
    )


class ProxyTokenBody(BaseModel):
    """What the token may reach, and what every async request made with it gets besides the
    relay to its callback_url."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = Field(default="", max_length=256)
    resources: list[Annotated[str, AfterValidator(resource_prefix)]] = Field(
        default_factory=lambda: list(DEFAULT_RESOURCES), min_length=1, max_length=MAX_RESOURCES
    )
    targets: list[Target] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


async def _token_body(request: Request, state: State) -> ProxyTokenBody:
    raw = await read_limited(request, state.settings.GATEWAY_MAX_BODY_BYTES)
    if not raw.strip():
        return ProxyTokenBody()
    if media_type(request) != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    try:
        body = ProxyTokenBody.model_validate(parse_json(raw))
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc
    for index, target in enumerate(body.targets):
        if isinstance(target, WebhookTarget):
            if why := await refusal(state.settings, target.url):
                raise BadRequest(f"targets.{index}.url: {why}")
        elif why := queue_names.refusal(target.queue, state.settings.GATEWAY_KEY_PREFIX):
            raise BadRequest(f"targets.{index}.queue: {why}")
    return body


@tokens_router.post("", status_code=201)
async def create_token(request: Request, state: State, _: ApiKey) -> JSONResponse:
    """Issue a token for the drop-in proxy; it is shown once, only its hash is kept."""
    body = await _token_body(request, state)
    secret = state.settings.GATEWAY_PROXY_TOKEN_SECRET.get_secret_value()
    if not secret:
        raise BadRequest("the gateway issues no proxy tokens: GATEWAY_PROXY_TOKEN_SECRET is not set")
    token_id = new_token_id()
    token = derive(secret, token_id)
    created = now_ms()
    targets = [t.model_dump() for t in body.targets]
    record = {
        "hash": token_hash(token),
        "created_at": str(created),
        "description": body.description,
        "resources": json.dumps(body.resources),
        "targets": json.dumps(targets),
        "metadata": json.dumps(body.metadata),
    }
    await ratelimit_keys.frontdoor(request, state).save_token(token_id, record)
    log.info("proxy_token_created", token_id=token_id)
    view = {
        "id": token_id,
        "auth_id": state.settings.PLIVO_AUTH_ID,
        "token": token,
        "description": body.description,
        "resources": body.resources,
        "targets": targets,
        "metadata": body.metadata,
        "created_at": iso_ms(created),
    }
    content = {"api_id": new_api_id(), "message": "proxy token created", "proxy_token": view}
    return JSONResponse(content, status_code=201)


@tokens_router.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: str, request: Request, state: State, _: ApiKey) -> Response:
    """Revoke a proxy token: the proxy refuses it from now on."""
    if not await ratelimit_keys.frontdoor(request, state).delete_token(token_id):
        raise NotFound(f"no proxy token with id {token_id}")
    log.info("proxy_token_revoked", token_id=token_id)
    return Response(status_code=204)
