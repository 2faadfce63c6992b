"""A user's own arq worker, run as a separate process, that consumes a queue target.

Each job appends the event it received (as JSON) to the Redis list ``USERWORKER_LIST``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from arq.connections import RedisSettings


async def on_result(ctx: dict[str, Any], event: dict[str, Any]) -> None:
    await ctx["redis"].rpush(os.environ["USERWORKER_LIST"], json.dumps(event))


class WorkerSettings:
    functions = [on_result]
    redis_settings = RedisSettings.from_dsn(os.environ["REDIS_URL"])
    queue_name = os.environ["USERWORKER_QUEUE"]
    poll_delay = 0.05
