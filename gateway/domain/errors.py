"""The gateway's errors, rendered once at the HTTP boundary as Plivo does: ``{"api_id", "error"}``.

GatewayError (500)
├── BadRequest (400)          invalid body, parameter or query; the message names the field
├── Unauthorized (401)        missing or unknown API key
├── Forbidden (403)           callback signature missing or wrong
├── NotFound (404)
├── RequestTimeout (408)      the body trickled in too slowly (slowloris guard)
├── PayloadTooLarge (413)
├── UnsupportedMediaType (415)
├── Unprocessable (422)       e.g. an Idempotency-Key reused with another body
├── RateLimited (429)         carries ``retry_after``
├── UpstreamError (status)    Plivo answered 4xx: its status and its ``error`` text, unchanged
├── BadGateway (502)          Plivo unreachable or failing after bounded retries
│   ├── OutcomeUnknown        a create may or may not have been carried out: never resent
│   └── AcceptedNotRecorded   Plivo accepted, Redis could not record it: do not resend
└── Unavailable (503)         Redis unreachable: nothing was stored, the caller should retry
"""

from __future__ import annotations

import uuid


def new_api_id() -> str:
    return str(uuid.uuid1())


class GatewayError(Exception):
    status_code = 500
    default_message = "internal server error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(GatewayError):
    status_code = 400
    default_message = "invalid request"


class Unauthorized(GatewayError):
    status_code = 401
    default_message = "authentication failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(GatewayError):
    status_code = 403
    default_message = "forbidden"


class NotFound(GatewayError):
    status_code = 404
    default_message = "not found"


class RequestTimeout(GatewayError):
    status_code = 408
    default_message = "request body not received in time"


class PayloadTooLarge(GatewayError):
    status_code = 413
    default_message = "request body too large"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    default_message = "unsupported content type"


class Unprocessable(GatewayError):
    status_code = 422
    default_message = "unprocessable request"


class RateLimited(GatewayError):
    status_code = 429
    default_message = "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """Plivo refused the request (4xx): pass its status and error text through."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadGateway(GatewayError):
    status_code = 502
    default_message = "upstream unavailable"


class OutcomeUnknown(BadGateway):
    """A create reached Plivo, or may have, and no usable answer came back (5xx, timeout, reset):
    Plivo may have carried it out, so it must not be sent again."""

    default_message = "upstream outcome unknown"


class AcceptedNotRecorded(BadGateway):
    """Plivo took the request but Redis could not record it: a retry would send it twice."""


class Unavailable(GatewayError):
    status_code = 503
    default_message = "service unavailable, retry later"
