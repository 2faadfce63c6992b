"""What a bench run does: durations, rates, concurrency, and where it runs (loopback only)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

PHASES = ("ingest", "baselines", "e2e", "delivery", "memory", "history")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    duration: float = 8.0  # seconds per saturated phase (ingest and each baseline)
    warmup: float = 1.0
    concurrency: int = 64
    fixed_rate: int = 1000  # callbacks/s for the unsaturated latency figure
    fixed_duration: float = 5.0
    e2e_rate: int = 500
    e2e_duration: float = 8.0
    deliveries: int = 10_000  # webhook deliveries for the throughput phase
    pending: int = 100_000  # pending requests for the memory figure
    sweep_pending: int = 1_000_000
    sweep_due: int = 1_000
    metadata_bytes: int = 100
    # history: finished requests for the bytes figures, the outbox lag's submit rate and length,
    # the writer's batches of 200 trees, the attempt rows the list queries read, timed calls each
    history_requests: int = 500
    history_steady_rate: float = 1.0  # requests/s whose marks and refs fill the buckets first (steady.py)
    history_rate: int = 50  # the sandbox (4 callbacks a request) keeps up with this on 2 cores
    history_duration: float = 10.0
    history_write_batches: int = 50
    history_attempts: int = 5_000_000
    history_query_runs: int = 50
    server_workers: int = 2
    load_procs: int = 0  # Python generator processes; 0 = one per core
    force_python_load: bool = False
    phases: tuple[str, ...] = PHASES
    log_level: str = "WARNING"
    # Targeting a running stack instead of starting one.
    url: str | None = None
    auth_token: str | None = None
    public_url: str | None = None
    redis_url: str | None = None
    key_prefix: str = "cg:"
    json_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def load_processes(self) -> int:
        return self.load_procs or max(1, os.cpu_count() or 1)

    def quick(self) -> BenchOptions:
        """A tiny run that proves every phase works in a few seconds (the test uses it)."""
        return replace(
            self,
            duration=1.0,
            warmup=0.2,
            concurrency=8,
            fixed_rate=200,
            fixed_duration=1.0,
            e2e_rate=100,
            e2e_duration=1.0,
            deliveries=200,
            pending=2_000,
            sweep_pending=20_000,
            sweep_due=100,
            history_requests=20,
            history_steady_rate=0.05,
            history_duration=2.0,
            history_write_batches=2,
            history_attempts=50_000,
            history_query_runs=10,
            server_workers=1,
            load_procs=1,
        )


def require_loopback(url: str) -> str:
    """The bench never sends load anywhere but this machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return url.rstrip("/")
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url.rstrip("/")
    except ValueError:
        pass
    raise ValueError(f"bench only targets loopback addresses, not {host!r}")


def check(opts: BenchOptions) -> BenchOptions:
    unknown = [p for p in opts.phases if p not in PHASES]
    if unknown:
        raise ValueError(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    if opts.url is not None:
        require_loopback(opts.url)
        if not opts.auth_token:
            raise ValueError("--url needs --auth-token (the PLIVO_AUTH_TOKEN the stack verifies with)")
        require_loopback(opts.public_url or opts.url)
    if opts.redis_url is not None:
        require_loopback(opts.redis_url)
    if max(opts.duration, opts.e2e_duration, opts.fixed_duration, opts.history_duration) > 120:
        raise ValueError("a phase lasts at most 120 s")
    if opts.concurrency < 1 or opts.concurrency > 1024:
        raise ValueError("--concurrency must be in 1..1024")
    if max(opts.fixed_rate, opts.e2e_rate, opts.history_rate) > 50_000 or opts.history_rate < 1:
        raise ValueError("fixed rates are capped at 50,000/s")
    if opts.history_requests < 1 or opts.history_attempts < 64 or opts.history_attempts > 20_000_000:
        raise ValueError("history needs at least 1 request and 64..20,000,000 attempt rows")
    return opts
