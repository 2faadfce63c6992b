"""docs/operations.md's configuration reference, generated from the `Settings` class.

One row per setting: its name, its type with the range the class enforces, its default as `.env`
spells it, and its `Field(description=...)`. Written between two markers in the doc, so the rest
of the page stays hand-written; tests/project/test_operations.py fails when the doc and the class differ.

    python -m tooling.settings_reference            # print the table
    python -m tooling.settings_reference --write    # rewrite it in docs/operations.md
    python -m tooling.settings_reference --check    # exit 1 if docs/operations.md is stale
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from gateway.settings import Settings, default_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
HEADER = "| variable | type | default | meaning |\n|---|---|---|---|"

# Each type in the singular and as the items of a comma-separated list.
_NAMES: dict[object, tuple[str, str]] = {
    SecretStr: ("secret", "secrets"),
    bool: ("true or false", "booleans"),
    int: ("integer", "integers"),
    float: ("number", "numbers"),
    str: ("text", "values"),
}


def _without_none(annotation: object) -> object:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _kind(annotation: object, plural: bool = False) -> str:
    annotation = _without_none(annotation)
    if get_origin(annotation) is Literal:
        choices = ", ".join(f"`{value}`" for value in get_args(annotation))
        return f"values from {choices}" if plural else f"one of {choices}"
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return f"comma-separated {_kind(item, plural=True)}"
    singular, several = _NAMES.get(annotation, (str(annotation), str(annotation)))
    return several if plural else singular


def _bounds(info: FieldInfo) -> str:
    lower = upper = ""
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Gt):
            lower = f"> {bound.gt}"
        elif isinstance(bound, annotated_types.Ge):
            lower = f">= {bound.ge}"
        elif isinstance(bound, annotated_types.Le):
            upper = f"<= {bound.le}"
        elif isinstance(bound, annotated_types.MinLen):
            lower = f"(at least {bound.min_length})"
    if lower.startswith(">=") and upper:
        return f"{lower[3:]}-{upper[3:]}"
    return ", ".join(part for part in (lower, upper) if part)


def type_text(info: FieldInfo) -> str:
    """What a setting takes, e.g. "integer > 0", "integer 1-65535", "one of `json`, `console`"."""
    bounds = _bounds(info)
    return f"{_kind(info.annotation)} {bounds}" if bounds else _kind(info.annotation)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_table() -> str:
    rows = [HEADER]
    for name, info in Settings.model_fields.items():
        default = default_text(name)
        cells = (f"`{name}`", type_text(info), f"`{default}`" if default else "", info.description or "")
        rows.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(rows)


def documented_table(doc: str) -> str:
    """The table between the markers of docs/operations.md, as it is now."""
    return doc[doc.index(BEGIN) + len(BEGIN) : doc.index(END)].strip()


def with_table(doc: str) -> str:
    start, stop = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    return doc[:start] + "\n" + reference_table() + "\n" + doc[stop:]


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    if "--write" in argv:
        DOC.write_text(with_table(doc))
    elif "--check" in argv:
        if documented_table(doc) != reference_table():
            print(f"{DOC} is stale: run python -m tooling.settings_reference --write", file=sys.stderr)
            return 1
    else:
        print(reference_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
