"""Names and defaults as `.env` spells them; variables that look like settings but are none."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from gateway.settings.checks import NOT_SETTINGS, OWN_PREFIXES, env_text, example_of
from gateway.settings.model import Settings


def default_text(name: str) -> str:
    """The default of a setting as `NAME=` would spell it in .env ("" when it has none)."""
    return env_text(Settings.model_fields[name].get_default(call_default_factory=True))


def example(name: str) -> str:
    """A valid value of a setting: its documented example, else its default."""
    return example_of(Settings, name)


def unknown_names(
    environ: Mapping[str, str] | None = None, dotenv: Mapping[str, str | None] | None = None
) -> list[str]:
    """Variables that look like settings but are none (typos such as GATEWAY_API_KEY), sorted.

    `environ` defaults to the process environment, `dotenv` to the `.env` file Settings reads
    (pass `{}` for none). In the environment, names with one of our prefixes count, and a
    setting's name in another case (settings are case-sensitive: `log_level` is not read). In the
    `.env` file every name counts: the gateway reads nothing else from it."""
    if environ is None:
        environ = os.environ
    if dotenv is None:
        env_file = Path(str(Settings.model_config.get("env_file")))
        dotenv = dotenv_values(env_file) if env_file.is_file() else {}
    known = Settings.model_fields.keys()

    def ours(name: str) -> bool:
        return name.upper().startswith(OWN_PREFIXES) or name.upper() in known

    candidates = {name for name in environ if ours(name)} | set(dotenv)
    return sorted(name for name in candidates if name not in known and name not in NOT_SETTINGS)


def closest_setting(name: str) -> str | None:
    """The setting an unknown name probably meant, for a "did you mean" hint."""
    if name.upper() in Settings.model_fields:
        return name.upper()
    close = difflib.get_close_matches(name.upper(), list(Settings.model_fields), n=1, cutoff=0.8)
    return close[0] if close else None
