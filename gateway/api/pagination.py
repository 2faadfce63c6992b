"""Plivo's list format: ``meta`` with limit, offset, total_count, next and previous."""

from __future__ import annotations

from typing import NotRequired, TypedDict
from urllib.parse import urlencode


class Meta(TypedDict):
    limit: int
    offset: int
    total_count: int
    next: str | None  # the next page's path and query, None on the last page
    previous: str | None
    total_count_estimated: NotRequired[bool]  # True: total_count is an estimate (above 10,000 rows)


class Page(TypedDict):
    meta: Meta


def page(
    path: str, limit: int, offset: int, total: int, filters: dict[str, str], *, estimated: bool = False
) -> Page:
    def link(new_offset: int) -> str:
        query = {**{k: v for k, v in filters.items() if v}, "limit": limit, "offset": new_offset}
        return f"{path}?{urlencode(query)}"

    meta: Meta = {
        "limit": limit,
        "offset": offset,
        "total_count": total,
        "next": link(offset + limit) if offset + limit < total else None,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
    }
    if estimated:
        meta["total_count_estimated"] = True
    return {"meta": meta}
