"""Daily partitions: created ahead of the rows that need them, dropped whole once past retention.

A partition is ``{table}_p{YYYYMMDD}`` holding [that day 00:00 UTC, the next day). Creating and
dropping happen under a transaction-level advisory lock, so processes doing it at once do not race.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.history.migrate import Conn

TABLES = {
    "requests": "submitted_at",
    "events": "created_at",
    "deliveries": "created_at",
    "attempts": "at",
    "callbacks": "received_at",
}
LOCK_KEY = 0x6362677770617274  # "cbgwpart"
DAY_MS = 86_400_000


def day_of(ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).date()


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


async def ensure(conn: Conn, days: Iterable[dt.date]) -> list[str]:
    """Create the partitions of ``days`` that are missing, for every table; returns those created."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    existing = {
        row["relname"]
        for row in await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY($1::text[])"
            " AND p.relnamespace = current_schema()::regnamespace",
            list(TABLES),
        )
    }
    missing = [(t, d) for d in wanted for t in TABLES if partition_name(t, d) not in existing]
    if not missing:
        return []
    created = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        for table, day in missing:
            name = partition_name(table, day)
            start, end = day.isoformat(), (day + dt.timedelta(days=1)).isoformat()
            status = await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
                f" FOR VALUES FROM ('{start} 00:00+00') TO ('{end} 00:00+00')"
            )
            if status == "CREATE TABLE":
                created.append(name)
    return created


async def drop_expired(conn: Conn, now_ms: int, retention_s: int) -> list[str]:
    """Drop every partition whose whole day ended more than ``retention_s`` ago."""
    cutoff = day_of(now_ms - retention_s * 1000)  # partitions of days before this one are past it
    rows = await conn.fetch(
        "SELECT c.relname, p.relname AS parent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY($1::text[])"
        " AND p.relnamespace = current_schema()::regnamespace",
        list(TABLES),
    )
    dropped = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        for row in rows:
            name, parent = row["relname"], row["parent"]
            suffix = name.removeprefix(parent + "_p")
            try:
                day = dt.datetime.strptime(suffix, "%Y%m%d").date()
            except ValueError:
                continue  # not one of ours
            if day < cutoff:
                await conn.execute(f"DROP TABLE IF EXISTS {name}")
                dropped.append(name)
    return dropped
