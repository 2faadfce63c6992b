"""Load generation: wrk for closed-loop runs when on PATH, else (and for fixed rates) Python processes."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tooling.bench import wrk
from tooling.bench.pyload import Plan, Result, run_plan
from tooling.bench.report import Stats, summarize


def generator_name(force_python: bool) -> str:
    return "wrk" if wrk.available() and not force_python else "python-multiprocess"


def _run_plans(plans: list[Plan]) -> list[Result]:
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per generator process
    with ProcessPoolExecutor(max_workers=len(plans), mp_context=ctx) as pool:
        return list(pool.map(run_plan, plans))


def _merge(results: list[Result], generator: str, elapsed: float | None = None) -> Stats:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    for r in results:
        statuses.update(r.statuses)
        latencies.extend(r.latencies_ms)
    ok = sum(n for code, n in statuses.items() if 200 <= code < 300)
    requests = sum(statuses.values()) + sum(r.errors for r in results)
    lat = summarize(latencies)
    return Stats(
        generator=generator,
        requests=requests,
        ok=ok,
        failed=requests - ok,
        elapsed=elapsed if elapsed is not None else max((r.elapsed for r in results), default=0.0),
        p50=lat["p50"],
        p95=lat["p95"],
        p99=lat["p99"],
        max=lat["max"],
    )


def closed_loop(
    corpus: Path, port: int, *, connections: int, duration: float, procs: int, force_python: bool
) -> Stats:
    """As fast as ``connections`` concurrent clients go, for ``duration`` seconds."""
    if wrk.available() and not force_python:
        return wrk.run(corpus, port, threads=procs, connections=connections, duration=duration)
    per = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
    plans = [Plan(str(corpus), port, i, procs, n, duration) for i, n in enumerate(per) if n]
    return _merge(_run_plans(plans), "python-multiprocess")


def open_loop(
    corpus: Path, port: int, *, rate: int, duration: float, procs: int, connections: int = 32
) -> tuple[Stats, dict[int, float]]:
    """``rate`` requests/s on a fixed schedule; returns the stats and each corpus line's send time."""
    lines = sum(1 for _ in corpus.open(encoding="ascii"))
    start = time.time() + 0.5 + lines * 10e-6  # after every process has parsed its share
    per = max(1, connections // procs)
    plans = [Plan(str(corpus), port, i, procs, per, duration, float(rate), start) for i in range(procs)]
    results = _run_plans(plans)
    sends = {g: at for r in results for g, at in r.sends}
    return _merge(results, "python-open-loop"), sends
