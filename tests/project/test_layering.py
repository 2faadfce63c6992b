"""The layering holds (import-linter's contracts in pyproject.toml) and no module imports itself back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "workers", "tooling")


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import a -> b whose b leads back to a, as the chain a -> b -> ... -> a."""
    found = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                found.append([module, *back])
    return found


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path, monkeypatch: object) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("from cyclic import a\n")
    (package / "c.py").write_text("from cyclic import a\n")
    sys.path.insert(0, str(tmp_path))
    try:
        graph = grimp.build_graph("cyclic", cache_dir=None)
    finally:
        sys.path.remove(str(tmp_path))
    assert _cycles(graph) == [["cyclic.a", "cyclic.b", "cyclic.a"], ["cyclic.b", "cyclic.a", "cyclic.b"]]


MAX_MODULE_LINES = 500


def oversized(root: Path, packages: tuple[str, ...], limit: int = MAX_MODULE_LINES) -> list[str]:
    """``path: lines`` of every module under ``packages`` longer than ``limit`` lines, longest first."""
    counts = [
        (len(path.read_text(encoding="utf-8").splitlines()), path.relative_to(root).as_posix())
        for package in packages
        for path in (root / package).rglob("*.py")
    ]
    return [f"{name}: {n}" for n, name in sorted(counts, key=lambda c: (-c[0], c[1])) if n > limit]


def test_no_runtime_module_is_over_500_lines() -> None:
    too_long = oversized(ROOT, ("gateway", "workers"))
    assert not too_long, f"over {MAX_MODULE_LINES} lines (split along a seam): " + ", ".join(too_long)


def test_the_size_check_finds_a_long_module(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * 500)
    (tmp_path / "pkg" / "sub" / "long.py").write_text("x = 1\n" * 510)
    assert oversized(tmp_path, ("pkg",)) == ["pkg/sub/long.py: 510"]
