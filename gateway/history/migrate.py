"""Versioned migrations: ``migrations/NNNN_name.sql``, applied in order, each in its own
transaction, under a PostgreSQL advisory lock so that processes starting together (several API
replicas, the workers, ``callback-gateway migrate``) apply each one exactly once: the first takes the
lock and migrates, the others wait for it and then find nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one borrowed from a pool: the same queries on both.
    Conn: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

# pg_advisory_lock's key: any constant of our own ("cbgwmigr" as an integer).
LOCK_KEY = 0x636267776D696772

_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The shipped migrations, in version order."""
    found = []
    for item in resources.files("gateway.history.migrations").iterdir():
        if item.name.endswith(".sql"):
            version, _, rest = item.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), item.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def migrate(conn: Conn) -> list[Migration]:
    """Apply what is missing; returns what this call applied (empty when up to date)."""
    applied: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        if await conn.fetchval("SELECT current_schema()") is None:
            # search_path names a schema that does not exist yet (DATABASE_URL?search_path=NAME)
            first = (await conn.fetchval("SELECT current_setting('search_path')")).split(",")[0].strip()
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(first.strip(chr(34)))}")
        await conn.execute(_TABLE)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            applied.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    return applied


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def current_version(conn: Conn) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
