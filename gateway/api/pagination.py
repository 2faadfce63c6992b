"""Plivo's list format: ``meta`` with limit, offset, total_count, next and previous."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode


def page(path: str, limit: int, offset: int, total: int, filters: dict[str, str]) -> dict[str, Any]:
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
