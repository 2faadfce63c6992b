"""Request bodies of the gateway's API, validated at the edge."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.services import queue_names

_RESOURCE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*/?$")
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_PARAMS = frozenset({"callback_url", "callback_method"})


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["webhook"]
    url: str = Field(max_length=2048)
    method: Literal["POST", "GET"] = "POST"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL")
        return value


class QueueTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: Literal["queue"]
    queue: str
    function: str

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        # Reserved names (GATEWAY_KEY_PREFIX is a setting) are refused by the routes.
        why = queue_names.malformed(value)
        if why:
            raise ValueError(why)
        return value

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if not _FUNCTION.fullmatch(value):
            raise ValueError("must be a Python identifier")
        return value


Target = Annotated[WebhookTarget | QueueTarget, Field(discriminator="type")]


class SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: Literal["POST", "GET", "DELETE"] = "POST"
    resource: str = Field(min_length=1, max_length=512)
    params: dict[str, Any] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list, max_length=20)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout: int | None = Field(default=None, gt=0)
    # Ask Plivo for status callbacks (message delivery reports; call ring/hangup) to the gateway,
    # which links them back to this request as message.status / call.status events.
    status_events: bool = False
    # Plivo's async pattern for the gateway's own API: where to send this request's events.
    callback_url: str | None = Field(default=None, max_length=2048)
    callback_method: Literal["POST", "GET"] = "POST"

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("callback_method", mode="before")
    @classmethod
    def _upper_cb(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("resource")
    @classmethod
    def _resource(cls, value: str) -> str:
        value = value.lstrip("/")
        if not _RESOURCE.fullmatch(value) or ".." in value:
            raise ValueError("must be a path below /v1/Account/{auth_id}/, e.g. 'Call/'")
        return value if value.endswith("/") else value + "/"

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = RESERVED_PARAMS & value.keys()
        if reserved:
            raise ValueError(f"{', '.join(sorted(reserved))} is set by the gateway")
        return value
