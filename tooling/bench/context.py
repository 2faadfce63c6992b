"""What every phase of one run shares: options, the stack's addresses, and the results so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooling.bench import corpus
from tooling.bench.options import BenchOptions
from tooling.bench.procs import Children


@dataclass
class Run:
    opts: BenchOptions
    workdir: Path
    children: Children
    gateway_port: int
    public_url: str
    token: str
    redis_url: str | None  # the stack's Redis; None when targeting --url without --redis-url
    prefix: str
    env: dict[str, str]
    generator: str
    local: bool  # True when bench started the stack itself
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def corpus(self, name: str, api_ids: list[str]) -> Path:
        path = self.workdir / f"{name}.corpus"
        return corpus.make_file(path, self.public_url, self.token, api_ids, self.opts.load_processes)
