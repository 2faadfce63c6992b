"""The docs name the tests that prove what they claim: every reference must point at a real test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# `tests/x.py::name` or, in the same cell, a following `::name` (same file).
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def _references(doc: Path) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for line in doc.read_text().splitlines():
        current = ""
        for path, name in REFERENCE.findall(line):
            current = path or current
            if current and (path or name):
                found.append((current, name))
    return found


@pytest.mark.parametrize("doc", ["docs/security.md"])
def test_every_test_a_doc_names_exists(doc: str) -> None:
    references = _references(ROOT / doc)
    assert len(references) > 20
    for path, name in references:
        source = ROOT / path
        assert source.is_file(), f"{doc} names {path}, which does not exist"
        if name:
            assert re.search(rf"^(async )?def {name}\(", source.read_text(), re.M), f"{doc}: {path}::{name}"
