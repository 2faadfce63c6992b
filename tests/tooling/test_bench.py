"""``callback-gateway bench`` in its tiny mode: every phase runs and reports (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.domain.history import AttemptRow, DeliveryRow, EventRow, RequestRow, Tree
from tooling.bench.command import options_from_flags
from tooling.bench.history import INFO_FIELDS, Snapshot, kind_of, per_request
from tooling.bench.historydb import kind_of as kind_of_sql
from tooling.bench.historydb import literal, synthetic
from tooling.bench.options import BenchOptions, check, require_loopback
from tooling.bench.report import percentile, summarize

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str, timeout: float = 110) -> tuple[dict, str]:  # type: ignore[type-arg]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--quick", "--json", str(out), *args],
        cwd=tmp_path,  # no stray .env is read
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.timeout(200)
def test_quick_bench_runs_every_phase(tmp_path: Path) -> None:
    data, stdout = _bench(tmp_path, timeout=190)
    results = data["results"]
    assert data["machine"]["cores"] >= 1
    assert data["machine"]["server_workers"] == 1
    assert results["ingest"]["ok"] > 0
    assert results["ingest"]["stored"] > 0
    assert results["ingest"]["failed"] == 0
    assert results["ingest_fixed_rate"]["ok"] > 0
    assert results["baseline_bare"]["ok"] > 0
    assert results["baseline_evalsha"]["ok"] > 0
    assert results["ingest_vs_evalsha"] > 0
    assert results["e2e"]["webhooks_received"] == results["e2e"]["callbacks"]
    assert results["e2e"]["jobs_started"] == results["e2e"]["callbacks"]
    delivery = results["delivery"]
    assert delivery["delivered"] == delivery["callbacks"]
    for key in (
        "bare_client_per_s",
        "ratio_to_bare_client",
        "worker_cpu_us_per_delivery",
        "cpu_bound_per_worker_process",
        "cpu_ratio_to_bare_client",
    ):
        assert isinstance(delivery[key], int | float), key
        assert delivery[key] > 0, key
    assert delivery["bare_client"]["failed"] == 0
    assert delivery["bare_client"]["body_bytes"] == delivery["body_bytes"]  # the worker's webhooks
    assert results["memory"]["bytes_per_request"] > 0
    assert results["sweep"]["taken"] == data["options"]["sweep_due"]
    _assert_history(results["history"])
    assert "| ingest, V3-signed" in stdout
    assert "| baseline: bare aiohttp POST to the subscriber, c=" in stdout
    assert "| worker CPU per delivery" in stdout
    assert "machine: cores=" in stdout
    assert "| Redis bytes per finished request, after the copy" in stdout
    assert "| outbox lag at " in stdout


def _assert_history(history: dict) -> None:  # type: ignore[type-arg]
    redis = history["redis"]
    for part in ("after_copy", "after_hot_retention", "what_if_forget"):
        assert redis[part]["bytes_per_request"] > 0, part
        assert redis[part]["memory_usage_per_request"] > 0, part
    copied = redis["after_copy"]["by_kind"]
    for kind in ("req", "evt", "dlv", "dlvlog", "dedup", "nonce"):
        assert copied[kind]["bytes"] > 0, kind
    assert redis["what_if_forget"]["settled_trees"] == redis["requests"]
    postgres = history["postgres"]
    assert postgres["bytes_per_request"] > 0
    # a request, 4 events, 4 deliveries, 4 attempts and 4 callbacks (a result, 3 status callbacks)
    assert postgres["rows_per_request"] == 17
    writer = history["writer"]
    assert writer["rows"] == writer["trees"] * 13
    assert writer["rows_per_s"] > 0
    assert writer["client_cpu_us_per_row"] > 0
    lag = history["lag"]
    assert lag["submitted"] > 0
    for key in ("p50", "p99", "max"):
        assert lag["lag_ms"][key] > 0, key
    lists = history["lists"]
    assert lists["data"]["attempts"] > 0
    assert lists["data"]["database_bytes"] > 0
    assert len(lists["queries"]) >= 6
    for name, query in lists["queries"].items():
        assert query["ms"]["p50"] > 0, name
        assert query["ms"]["p99"] > 0, name
        assert query["explain"]["page"]["generic"], name


@pytest.mark.timeout(120)
def test_python_load_generator_fallback(tmp_path: Path) -> None:
    data, _ = _bench(tmp_path, "--python-load", "--phases", "ingest,baselines")
    assert data["machine"]["load_generator"] == "python-multiprocess"
    assert data["results"]["ingest"]["generator"] == "python-multiprocess"
    assert data["results"]["ingest"]["stored"] == data["results"]["ingest"]["ok"]
    assert data["results"]["baseline_bare"]["ok"] > 0
    assert "e2e" not in data["results"]


def test_flags_override_quick_presets() -> None:
    opts = options_from_flags(True, "ingest,memory", {"duration": 3.0, "concurrency": None})
    assert opts.duration == 3.0
    assert opts.concurrency == BenchOptions().quick().concurrency
    assert opts.phases == ("ingest", "memory")


def test_bench_refuses_anything_but_loopback() -> None:
    assert require_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert require_loopback("http://localhost:8000") == "http://localhost:8000"
    with pytest.raises(ValueError, match="loopback"):
        require_loopback("http://10.0.0.5:8000")
    with pytest.raises(ValueError, match="auth-token"):
        check(BenchOptions(url="http://127.0.0.1:8000"))
    with pytest.raises(ValueError, match="unknown phase"):
        check(BenchOptions(phases=("nope",)))


def test_history_figures_are_per_request_deltas() -> None:
    before = Snapshot(1_000, 1_100, dict.fromkeys(INFO_FIELDS, 0), {"req": (1, 100)})
    after = Snapshot(3_000, 3_500, dict.fromkeys(INFO_FIELDS, 0), {"req": (3, 700), "dedup": (8, 704)})
    got = per_request(before, after, 2)
    assert got["bytes_per_request"] == 1_000  # used_memory less the clients' buffers
    assert got["used_memory_delta_per_request"] == 1_200
    assert got["by_kind"] == {"dedup": {"keys": 4, "bytes": 352}, "req": {"keys": 1, "bytes": 300}}
    assert got["memory_usage_per_request"] == 652
    assert kind_of("cg:deliveries:status:succeeded") == "deliveries"
    assert kind_of("arq:job:x") == "arq"


def test_synthetic_trees_are_fresh_copies() -> None:
    template = Tree(
        request=RequestRow("a1", 1_000, "completed", "Message/", "POST", 1_080, {}, {"api_id": "a1"}),
        events=[EventRow("e1", 1_060, "a1", "request.completed", {"id": "e1", "api_id": "a1"})],
        deliveries=[
            DeliveryRow("d1", 1_070, "e1", "a1", "request.completed", "s1", {}, "succeeded", 1, 0, 1_090, {})
        ],
        attempts=[AttemptRow("d1", 0, 1, 1_090, "e1", "a1", "http://h", "success", 204, 2.0, None, "")],
        settled=True,
    )
    copy = synthetic(template, 5_000)
    assert copy.row_count() == template.row_count() == 4
    assert copy.request is not None and copy.request.api_id != "a1"
    assert copy.request.record["api_id"] == copy.request.api_id
    assert copy.events[0].created_at == 5_060 and copy.events[0].body["id"] == copy.events[0].event_id
    assert copy.deliveries[0].event_id == copy.events[0].event_id
    assert copy.attempts[0].delivery_id == copy.deliveries[0].delivery_id
    assert copy.attempts[0].at == 5_090


def test_list_statement_kinds_and_literals() -> None:
    assert kind_of_sql("SELECT count(*) FROM (SELECT 1 FROM deliveries LIMIT 10001) t") == "count"
    assert kind_of_sql("EXPLAIN (FORMAT JSON) SELECT 1 FROM deliveries") == "estimate"
    assert kind_of_sql("SELECT * FROM attempts WHERE delivery_id = ANY($1::text[])") == "attempt_logs"
    assert kind_of_sql("SELECT pg_advisory_unlock_all(); CLOSE ALL;") is None
    assert literal("it's") == "'it''s'"
    assert literal(["a", "b"]) == "ARRAY['a','b']::text[]"
    assert literal(None) == "NULL"


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert summarize(values)["max"] == 100.0
