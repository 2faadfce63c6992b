"""Plivo's conventions on every answer, and an OpenAPI schema that documents them.

Every error is ``{"api_id", "error"}`` (``gateway.domain.errors`` and the handlers in ``gateway.api.app``);
this module adds useful messages for Starlette's own 404 (unknown route) and 405 (wrong method),
and rewrites the generated OpenAPI schema so each ``/v1/`` operation documents the errors it can
answer with that shape, and its JSON successes as carrying ``api_id`` and ``message``. FastAPI's
default 422 ``HTTPValidationError`` is dropped: validation errors are rendered as Plivo's 400.
"""

from __future__ import annotations

from typing import Any, TypedDict

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gateway.domain.errors import new_api_id


class ObjectSchema(TypedDict):
    """A JSON Schema of an object, as the answers' shapes below are written."""

    title: str
    type: str
    properties: dict[str, dict[str, str]]
    required: list[str]
    additionalProperties: bool


ERROR_SCHEMA: ObjectSchema = {
    "title": "Error",
    "type": "object",
    "properties": {"api_id": {"type": "string"}, "error": {"type": "string"}},
    "required": ["api_id", "error"],
    "additionalProperties": False,
}
# A create sent upstream without a usable answer (gateway.services.upstream.OutcomeUnknown): 502 with the
# ref under which the request is kept (GET /v1/requests/{ref}).
UNKNOWN_SCHEMA: ObjectSchema = {
    "title": "UnknownOutcome",
    "type": "object",
    "properties": {
        "api_id": {"type": "string"},
        "error": {"type": "string"},
        "status": {"const": "unknown"},
        "ref": {"type": "string"},
    },
    "required": ["api_id", "error", "status", "ref"],
    "additionalProperties": False,
}
SUCCESS_SCHEMA: ObjectSchema = {
    "title": "Success",
    "type": "object",
    "properties": {"api_id": {"type": "string"}, "message": {"type": "string"}},
    "required": ["api_id", "message"],
    "additionalProperties": True,
}

ERRORS = {
    400: "A parameter, query or body is invalid; the message names the field.",
    401: "Missing or unknown credentials.",
    404: "No such resource.",
    413: "Request body too large.",
    415: "Content-Type is not application/json.",
    422: "Idempotency-Key reused with another body.",
    429: "Rate limit reached; see Retry-After.",
    500: "Unexpected error; its api_id is in the gateway's log.",
    502: "Plivo unreachable or failing after bounded retries; for a submit, also a create whose "
    "outcome is unknown (kept with status unknown under `ref`, never resent).",
    503: "Redis unavailable: nothing was stored; retry later.",
}
# Operations that read a JSON body (413, 415) or call Plivo (502); the submit alone can answer 422.
BODY_OPERATIONS = {
    ("post", "/v1/requests"),
    ("post", "/v1/subscriptions"),
    ("post", "/v1/subscriptions/{sub_id}/replay"),
    ("post", "/v1/proxy_tokens"),
    ("post", "/v1/Account/{auth_id}/{resource}"),
}
UPSTREAM_OPERATIONS = {("post", "/v1/requests")} | {
    (m, "/v1/Account/{auth_id}/{resource}") for m in ("get", "post", "delete")
}


def error_codes(method: str, path: str) -> list[int]:
    codes = {400, 401, 429, 500, 503}
    if "{" in path:
        codes.add(404)
    if (method, path) in BODY_OPERATIONS:
        codes |= {413, 415}
    if (method, path) in UPSTREAM_OPERATIONS:
        codes.add(502)
    if (method, path) == ("post", "/v1/requests"):
        codes.add(422)
    return sorted(codes)


def _document_successes(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        content = response.get("content")
        if not status.startswith("2") or not content:
            continue
        if "text/event-stream" in content:
            content.pop("application/json", None)
            continue
        json_content = content.get("application/json")
        if json_content is not None and not json_content.get("schema"):
            json_content["schema"] = {"$ref": "#/components/schemas/Success"}


def document(schema: dict[str, Any]) -> None:
    """Rewrite ``schema`` in place: the error and success shapes of every ``/v1/`` operation."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    components["Success"] = SUCCESS_SCHEMA
    components["UnknownOutcome"] = UNKNOWN_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if not path.startswith("/v1/"):
                continue
            _document_successes(responses)
            for code in error_codes(method, path):
                responses[str(code)] = {"description": ERRORS[code], "content": error_ref}
            if (method, path) == ("post", "/v1/requests"):
                either = {
                    "oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in ("Error", "UnknownOutcome")]
                }
                responses["502"]["content"] = {"application/json": {"schema": either}}


def _allowed_methods(request: Request) -> str:
    return ", ".join(sorted(_methods_for(request.app.router.routes, request.scope)))


def _methods_for(routes: Any, scope: Any) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI wraps included routers
        if inner is not None:
            methods |= _methods_for(inner.routes, scope)
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTP errors (unknown route, wrong method) in Plivo's shape, with a useful text."""
    assert isinstance(exc, StarletteHTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"Not Found: no route for {request.method} {request.url.path}"
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        message = f"Method Not Allowed: {request.method} on {request.url.path}"
        # Starlette names only the first route that matched the path; a path served by several
        # routes (a GET and a POST handler) must list every method it supports.
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return JSONResponse({"api_id": new_api_id(), "error": message}, exc.status_code, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            document(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
