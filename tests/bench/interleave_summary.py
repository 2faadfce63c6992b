"""Medians per side of the runs tests/bench/interleave.sh wrote: python interleave_summary.py TAG."""

import glob
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def figures(results: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    if "e2e" in results:
        e = results["e2e"]
        out["e2e_webhook_p50"] = e["webhook_ms"]["p50"]
        out["e2e_webhook_p99"] = e["webhook_ms"]["p99"]
        out["e2e_job_p50"] = e["queue_job_ms"]["p50"]
        if "outbox_lag_ms" in e:
            out["outbox_lag_p50"] = e["outbox_lag_ms"]["p50"]
            out["outbox_lag_p99"] = e["outbox_lag_ms"]["p99"]
    if "delivery" in results:
        d = results["delivery"]
        out["deliveries_per_s"] = d["deliveries_per_s"]
        out["worker_cpu_us"] = d.get("worker_cpu_us_per_delivery")
        out["writer_cpu_us"] = d.get("writer_cpu_us_per_delivery")
        out["redis_cpu_us"] = d.get("redis_cpu_us_per_delivery")
    if isinstance(results.get("ingest"), dict):
        out["ingest_rate"] = results["ingest"].get("rate")
    return out


def main(tag: str) -> None:
    by_figure: dict[str, dict[str, list[float]]] = {}
    for path in sorted(glob.glob(f"/tmp/qb/{tag}-*.json")):
        side = path.rsplit("-", 1)[1].removesuffix(".json")
        values = figures(json.loads(Path(path).read_text())["results"])
        print(path.rsplit("/", 1)[1], {k: v for k, v in values.items() if v is not None})
        for name, value in values.items():
            if value is not None:
                by_figure.setdefault(name, {}).setdefault(side, []).append(value)
    print()
    for name, sides in by_figure.items():
        medians = {s: round(statistics.median(v), 2) for s, v in sides.items()}
        print(f"{name:18s} {medians}")


if __name__ == "__main__":
    main(sys.argv[1])
