"""Reads that span both stores: what Redis still holds (hot, and the freshest) over what
PostgreSQL keeps (everything copied). A request is read from Redis alone while Redis has the whole
of it; once Redis has let part of it go (or all of it), PostgreSQL's copy is read and what Redis
still holds is laid over it (``gateway.domain.history.merge``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.domain.errors import Unavailable
from gateway.domain.history import Tree, merge
from gateway.history.client import HistoryClient, HistoryUnavailable
from gateway.history.store import HistoryStore
from gateway.store.archive import ArchiveStore, Changed

T = TypeVar("T")


async def request_tree(archive: ArchiveStore, history: HistoryClient, api_id: str) -> Tree | None:
    """The request ``api_id`` with its events, deliveries and attempts; None if neither store has
    it. Raises ``Unavailable`` (503) when only PostgreSQL could answer and it cannot be reached."""
    hot = (await archive.read([("r:" + api_id, "0")]))[0].tree
    if hot.request is not None and not hot.request.record.get("archived"):
        return hot
    try:
        store = history.require()
    except HistoryUnavailable as exc:
        raise Unavailable(f"history store (PostgreSQL) unavailable: {exc}") from None
    cold = await store.get_tree(api_id)
    if cold is None:
        return hot if hot.request is not None else None
    return merge(cold, hot)


# --- lists ---------------------------------------------------------------------------------------
# A list reads both stores. PostgreSQL's copy of an item is current unless the item changed since
# it was copied, and exactly those items are members of the archive zset (a request ``r:``, or an
# event of no request ``e:``, with everything under it). So a page is the PostgreSQL rows that match,
# the archive's items left out, plus the archive's items that match, read from Redis; newest first.
# The total is the sum of both counts: exact, unless PostgreSQL's count passes COUNT_EXACT_MAX (then
# the planner's estimate, flagged). The archive is small (what changed in the last
# GATEWAY_HISTORY_DELAY); while it holds more than CHANGED_LIST_MAX (PostgreSQL down, or catching up)
# lists answer 503 rather than a page that could be wrong; single reads still answer.

CHANGED_LIST_MAX = 2_000

Row = tuple[int, str, T]  # (sort key: ms, id, the item), listed newest first


@dataclass(slots=True)
class Listing(Generic[T]):
    total: int
    items: list[T]
    estimated: bool = False


async def changed(archive: ArchiveStore) -> list[Changed]:
    """The trees that changed since they were copied (the archive's members), read from Redis."""
    members = await archive.members(CHANGED_LIST_MAX + 1)
    if len(members) > CHANGED_LIST_MAX:
        raise Unavailable(
            f"lists are unavailable while more than {CHANGED_LIST_MAX} changed requests wait to be copied "
            "to PostgreSQL (the history backlog); single requests can be read"
        )
    return await archive.read([(m, "0") for m in members])


def cold_store(history: HistoryClient) -> HistoryStore:
    try:
        return history.require()
    except HistoryUnavailable as exc:
        raise Unavailable(f"history store (PostgreSQL) unavailable: {exc}") from None


def merge_page(
    hot: list[Row[T]], cold_total: int, cold: list[Row[T]], estimated: bool, offset: int, limit: int
) -> Listing[T]:
    rows = sorted(hot + cold, key=lambda r: (r[0], r[1]), reverse=True)
    return Listing(cold_total + len(hot), [r[2] for r in rows[offset : offset + limit]], estimated)
