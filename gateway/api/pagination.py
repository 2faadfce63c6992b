"""Plivo's list format: ``meta`` with limit, offset, total_count, next and previous."""

from __future__ import annotations

from typing import TypedDict
from urllib.parse import urlencode


class Meta(TypedDict):
    limit: int
    offset: int
    total_count: int
    next: str | None  # the next page's path and query, None on the last page
    previous: str | None


class Page(TypedDict):
    meta: Meta


def page(path: str, limit: int, offset: int, total: int, filters: dict[str, str]) -> Page:
    def link(new_offset: int) -> str:
        query = {**{k: v for k, v in filters.items() if v}, "limit": limit, "offset": new_offset}
        return f"{path}?{urlencode(query)}"

    return {
        "meta": {
            "limit": limit,
            "offset": offset,
            "total_count": total,
            "next": link(offset + limit) if offset + limit < total else None,
            "previous": link(max(0, offset - limit)) if offset > 0 else None,
        }
    }
