"""docs/operations.md: its configuration reference is generated from the Settings class and the
comments of .env.example; this test fails when they drift. Regenerate with
``.venv/bin/python -m tests.test_operations --write``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def env_comments() -> dict[str, tuple[str, str]]:
    """NAME -> (value in .env.example, the comment block above it, joined)."""
    out: dict[str, tuple[str, str]] = {}
    comment: list[str] = []
    after_value = False  # consecutive NAME= lines share the comment above them
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("# ---"):
            comment, after_value = [], False
        elif line.startswith("#"):
            if after_value:
                comment, after_value = [], False
            comment.append(line.lstrip("# ").strip())
        elif "=" in line:
            name, _, value = line.partition("=")
            out[name] = (value, " ".join(comment))
            after_value = True
    return out


def reference_table() -> str:
    documented = env_comments()
    rows = ["| variable | type | default (.env.example) | meaning |", "|---|---|---|---|"]
    for name, info in Settings.model_fields.items():
        value, comment = documented.get(name, ("", ""))
        kind = re.sub(r"typing\.|Annotated\[|, NoDecode\]|pydantic\.types\.", "", str(info.annotation))
        kind = kind.replace("<class '", "").replace("'>", "")
        text = comment.replace("|", "\\|") or "(see .env.example)"
        rows.append(f"| `{name}` | {kind} | `{value}` | {text} |")
    return "\n".join(rows)


def current_table() -> str:
    text = DOC.read_text()
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()


def test_every_setting_is_in_the_reference_and_in_env_example() -> None:
    documented = env_comments()
    assert set(Settings.model_fields) <= set(documented), "a setting is missing from .env.example"
    assert current_table() == reference_table(), "regenerate: python -m tests.test_operations --write"


def test_operations_doc_covers_the_runbook_topics() -> None:
    text = DOC.read_text()
    for topic in (
        "appendfsync everysec",
        "appendfsync always",
        "Sentinel",
        "Cluster",
        "dead-letter",
        "Sizing",
    ):
        assert topic in text, topic


if __name__ == "__main__" and "--write" in sys.argv:
    doc = DOC.read_text()
    start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    DOC.write_text(doc[:start] + "\n" + reference_table() + "\n" + doc[stop:])
