"""Turning ``callback-gateway bench`` flags into a run (the CLI imports this lazily)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tooling.bench.options import PHASES, BenchOptions


def options_from_flags(quick: bool, phases: str | None, flags: dict[str, Any]) -> BenchOptions:
    """Defaults, then ``--quick``'s tiny presets, then every flag that was given."""
    opts = BenchOptions()
    if quick:
        opts = opts.quick()
    given = {k: v for k, v in flags.items() if v is not None}
    if phases:
        given["phases"] = tuple(p.strip() for p in phases.split(",") if p.strip())
    return replace(opts, **given)


def main(quick: bool, phases: str | None, flags: dict[str, Any]) -> int:
    from tooling.bench.runner import run

    try:
        opts = options_from_flags(quick, phases, flags)
        run(opts)
    except ValueError as exc:
        print(f"bench: {exc}")
        return 2
    return 0


__all__ = ["PHASES", "main", "options_from_flags"]
