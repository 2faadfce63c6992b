"""``callback-gateway bench`` in its tiny mode: every phase runs and reports (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tooling.bench.command import options_from_flags
from tooling.bench.options import BenchOptions, check, require_loopback
from tooling.bench.report import percentile, summarize

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, *args: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "bench", "--quick", "--json", str(out), *args],
        cwd=tmp_path,  # no stray .env is read
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.timeout(120)
def test_quick_bench_runs_every_phase(tmp_path: Path) -> None:
    data, stdout = _bench(tmp_path)
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
    assert "| ingest, V3-signed" in stdout
    assert "| baseline: bare aiohttp POST to the subscriber, c=" in stdout
    assert "| worker CPU per delivery" in stdout
    assert "machine: cores=" in stdout


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


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert summarize(values)["max"] == 100.0
