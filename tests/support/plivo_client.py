"""A Plivo user's own callback endpoint: records what arrives (GET or POST) with its full URL."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Hit:
    method: str
    path_and_query: str
    headers: dict[str, str]
    params: dict[str, str]


@dataclass
class PlivoUserEndpoint:
    hits: list[Hit] = field(default_factory=list)

    def app(self) -> Starlette:
        async def callback(request: Request) -> Response:
            form = await request.form() if request.method == "POST" else request.query_params
            query = f"?{request.url.query}" if request.url.query else ""
            params = {k: str(v) for k, v in form.items()}
            self.hits.append(Hit(request.method, request.url.path + query, dict(request.headers), params))
            return Response(status_code=200)

        return Starlette(routes=[Route("/{path:path}", callback, methods=["GET", "POST"])])
