"""Configuration: one typed class whose field names are the environment variable names.

Values come from the process environment first, then from a `.env` file in the working directory;
`NAME=` (empty) means unset. Each field carries its one-line description (docs/operations.md's
configuration reference is generated from them) and, where its default is empty, an example.

Everything is checked at construction, and every problem is reported in one `ValidationError`,
one error per variable: per-field rules, then cross-field rules written as validators of the later
field reading the earlier one from `info.data` (unlike a model validator, they still run when an
unrelated variable is invalid). `_explain` turns each error into a sentence that says what is
expected and gives an example `NAME=value`. `unknown_names` finds variables that look like
settings but are not (typos), which a model validator cannot see.
"""

from __future__ import annotations

from gateway.settings.checks import (
    DEFAULT_RETRY_SCHEDULE,
    SIGNATURE_VERSIONS,
    LogLevel,
    SignatureVersion,
    env_text,
)
from gateway.settings.model import Settings
from gateway.settings.names import closest_setting, default_text, example, unknown_names

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "SIGNATURE_VERSIONS",
    "LogLevel",
    "Settings",
    "SignatureVersion",
    "closest_setting",
    "default_text",
    "env_text",
    "example",
    "unknown_names",
]
