"""``callback-gateway bench``: reproducible figures for the whole stack, on loopback only.

Every server under test is a real process: uvicorn with an app factory (uvloop, httptools, access
log off, ``--workers N``), ``callback-gateway worker`` for delivery, redis-server from
``tooling.embedded_redis``. Baselines run under the same uvicorn settings in the same run, so the
figures that matter are ratios that survive a noisy machine.

| module        | owns                                                                  |
|---------------|-----------------------------------------------------------------------|
| ``options``   | the knobs (durations, rates, concurrency, ``--quick``) and their checks |
| ``corpus``    | V3-signed callback requests, written once to a file both generators read |
| ``load``      | the load generators: wrk when on PATH, else a multi-process asyncio one |
| ``pyload``    | the Python generator itself (raw HTTP/1.1 keep-alive, closed or open loop) |
| ``procs``     | starting and stopping the processes under test, and their CPU time    |
| ``apps``      | the baseline apps, the webhook subscriber and the queue-target job sink |
| ``ingest``    | phases 1 and 2: ingest and the baselines                               |
| ``e2e``       | phases 3 and 4: callback -> webhook / job latency, delivery throughput  |
| ``bareclient``| phase 4's baseline: the worker's webhooks POSTed by bare aiohttp      |
| ``memory``    | phase 5: Redis bytes per pending request and the timeout sweep         |
| ``history``   | phase 6: bytes per finished request (Redis, PostgreSQL), outbox lag   |
| ``historydb`` | phase 6 on PostgreSQL alone: the writer's rows/s, list queries at 5M rows |
| ``report``    | machine facts, percentiles, the table and the JSON                     |
| ``runner``    | the order of the phases                                                |
"""

from tooling.bench.options import BenchOptions

__all__ = ["BenchOptions"]
