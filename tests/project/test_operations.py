"""docs/operations.md and .env.example against the Settings class they document.

The configuration reference in docs/operations.md is generated from `Settings` by
`tooling.settings_reference` (regenerate: ``.venv/bin/python -m tooling.settings_reference --write``);
.env.example is written by hand for newcomers, and checked here: every setting once, each with its
own comment, each with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import Settings, default_text
from tooling import settings_reference

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
ENV_EXAMPLE = ROOT / ".env.example"
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def env_example() -> list[tuple[str, str, str]]:
    """(NAME, value, the line just above) for every NAME=value line of .env.example."""
    entries = []
    lines = ENV_EXAMPLE.read_text().splitlines()
    for before, line in zip(["", *lines], lines, strict=False):
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            entries.append((name, value, before))
    return entries


def test_the_reference_table_is_the_one_generated_from_settings() -> None:
    documented = settings_reference.documented_table(DOC.read_text())
    assert documented == settings_reference.reference_table(), (
        "docs/operations.md is stale: run .venv/bin/python -m tooling.settings_reference --write"
    )


def test_every_row_of_the_reference_has_four_cells() -> None:
    rows = settings_reference.documented_table(DOC.read_text()).splitlines()
    assert len(rows) == 2 + len(Settings.model_fields)
    for row in rows:
        assert len(UNESCAPED_PIPE.split(row.strip())) - 2 == 4, row


def test_the_reference_escapes_pipes_and_renders_defaults_as_env_spells_them() -> None:
    table = settings_reference.reference_table()
    assert "| `GATEWAY_RETRY_SCHEDULE` | comma-separated numbers | `0,5,300,1800," in table
    assert "| `GATEWAY_VERIFY_SIGNATURES` | true or false | `true` |" in table
    assert "| `GATEWAY_ADMIN_PORT` | integer 1-65535 |  |" in table
    assert "| `PLIVO_AUTH_TOKEN` | secret |  |" in table
    assert "| `LOG_LEVEL` | one of `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` | `INFO` |" in table
    assert settings_reference._cell("a | b") == "a \\| b"


def test_every_setting_has_its_own_one_line_description() -> None:
    descriptions = {}
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name}: add Field(description=...)"
        assert "\n" not in info.description, name
        descriptions[name] = info.description
    shared = {d for d in descriptions.values() if list(descriptions.values()).count(d) > 1}
    assert not shared, f"settings share a description: {shared}"


def test_env_example_lists_every_setting_once_each_under_its_own_comment() -> None:
    entries = env_example()
    names = [name for name, _, _ in entries]
    assert len(names) == len(set(names)), "a variable is listed twice"
    assert set(names) - set(Settings.model_fields) == set(), "not a setting"
    assert set(Settings.model_fields) - set(names) == set(), "missing from .env.example"
    for name, _, before in entries:
        assert before.startswith("# ") and not before.startswith("# ---"), (
            f".env.example: {name} needs its own comment on the line above it"
        )


def test_env_example_values_are_the_defaults() -> None:
    for name, value, _ in env_example():
        assert value == default_text(name), (
            f".env.example: {name}={value}, the default is {default_text(name)!r}"
        )


def test_the_docs_say_what_serve_and_worker_need() -> None:
    for text in (DOC.read_text(), ENV_EXAMPLE.read_text()):
        text = re.sub(r"\s+#?\s*", " ", text)  # .env.example's comments as running text
        assert re.search(r"serve`[^.]*PLIVO_AUTH_TOKEN", text)
        assert re.search(r"serve`[^.]*GATEWAY_API_KEYS", text)
        assert re.search(r"`serve` and `worker` use the Redis at `?redis://127\.0\.0\.1:6379/0", text)


@pytest.mark.parametrize(
    "topic",
    ["appendfsync everysec", "appendfsync always", "Sentinel", "Cluster", "dead-letter", "Sizing"],
)
def test_operations_doc_covers_the_runbook_topics(topic: str) -> None:
    assert topic in DOC.read_text()
