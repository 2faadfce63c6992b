"""Percentiles, machine facts, and the two outputs: a table for people and JSON for machines."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    """One load run: counts, achieved rate and latency percentiles in milliseconds."""

    generator: str
    requests: int
    ok: int
    failed: int
    elapsed: float
    p50: float
    p95: float
    p99: float
    max: float

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def summarize(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
    }


def _version(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "present"


def _redis_version() -> str:
    from tooling.embedded_redis import redis_server_binary

    try:
        out = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "unknown"
    words = out.stdout.split()
    found = [w for w in words if w.startswith("v=")]
    return found[0][2:] if found else "unknown"


def machine_facts(server_workers: int, generator: str) -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "uvicorn": _version("uvicorn"),
        "fastapi": _version("fastapi"),
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "redis_server": _redis_version(),
        "server_workers": server_workers,
        "load_generator": generator,
        "wrk": shutil.which("wrk"),
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def latency_cells(lat: dict[str, float] | None) -> str:
    if not lat:
        return "-"
    return " / ".join(_fmt(lat.get(k)) for k in ("p50", "p95", "p99")) + " ms"


def table(rows: list[tuple[str, str, str]]) -> str:
    """Markdown table (figure, value, latency p50/p95/p99 or note)."""
    head = ("figure", "value", "p50 / p95 / p99 or note")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def facts_text(facts: dict[str, Any]) -> str:
    keys = ("cores", "python", "uvloop", "httptools", "uvicorn", "fastapi", "redis_server", "server_workers")
    return ", ".join(f"{k}={facts.get(k) or 'absent'}" for k in keys) + f", load={facts['load_generator']}"


def write_json(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def fmt(value: Any, unit: str = "") -> str:
    return _fmt(value, unit)
