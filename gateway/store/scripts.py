"""The store's Lua scripts: ``.lua`` files under ``lua/``, loaded and called with named arguments.

A script file starts with a header naming what it takes, in order::

    --! keys: dedup inbox nonce
    --! args: dedup_ttl entry nonce_window

``--! args:`` may be repeated (the names continue). A name ending in ``?`` is optional: it and
every name after it may be left out, and the Lua local is then ``nil``. A last name written
``...name`` takes the rest (a sequence), bound in Lua to a table ``name``. The loader

* replaces each ``--#include lib/x.lua`` line by that file of ``lua/`` (the functions several
  scripts share; a library file includes what it uses), each file once per script;
* writes each ``{{NAME}}`` as the Lua literal of ``gateway.store.keys.LUA_NAMES[NAME]`` (key-name
  fragments, arq's prefixes, limits): the script text Redis runs has the plain strings in it;
* prepends ``local dedup, inbox, nonce = KEYS[1], KEYS[2], KEYS[3]`` and the same for ``ARGV``, so
  the body uses names and no offset is counted by hand anywhere;
* registers the result on the given client with ``register_script`` (a ``BatchingRedis`` batches
  its calls) and returns a function taking the names as keyword arguments, built once per script
  from the header, so that Python's own argument binding raises ``TypeError`` for a missing or
  unknown name and a call costs no more than building the two lists by hand.

``load(redis, "ingest")`` then ``await ingest(dedup=..., inbox=..., nonce=..., dedup_ttl=...,
entry=..., nonce_window=...)``; ``client=`` sends the call on a pipeline, as redis-py's
``Script`` does. ``load(..., read_only=True)`` sends it through ``read_only_call`` (identical
calls in one batch share a reply).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway.infra.redis_batch import read_only_call
from gateway.store.keys import LUA_NAMES

LUA_DIR = Path(__file__).with_name("lua")

ScriptCall = Callable[..., Awaitable[Any]]

_HEADER = re.compile(r"--!\s*(keys|args):(.*)")
_INCLUDE = re.compile(r"--#include\s+(\S+)\s*$")
_TEMPLATE = re.compile(r"\{\{([A-Z_]+)\}\}")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Lua keywords and the globals the scripts use: no argument may hide them.
_LUA_RESERVED = frozenset(
    re.findall(
        r"\w+",
        "and break do else elseif end false for function if in local nil not or repeat return then true "
        "until while redis cjson tonumber tostring string math table unpack ipairs pairs select type next",
    )
)


class _Absent:
    """An optional argument not given (``None`` is refused by Redis clients, so it is not used)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True, slots=True)
class Signature:
    keys: tuple[str, ...]
    args: tuple[str, ...]
    optional: tuple[str, ...]  # after ``args``, trailing
    rest: str = ""  # the variadic last argument (``...name``), if any
    rest_in_keys: bool = False


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    text: str  # what Redis runs
    signature: Signature


def _lua_literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _template(text: str, where: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(1) not in LUA_NAMES:
            raise ValueError(f"{where}: unknown {{{{{m.group(1)}}}}} (gateway.store.keys.LUA_NAMES)")
        return _lua_literal(LUA_NAMES[m.group(1)])

    return _TEMPLATE.sub(one, text)


def _signature(header: dict[str, list[str]], where: str) -> Signature:
    keys: list[str] = []
    args: list[str] = []
    optional: list[str] = []
    rest, rest_in_keys = "", False
    for kind in ("keys", "args"):
        for raw in header.get(kind, []):
            if rest and (kind == "keys" or not rest_in_keys or raw.startswith("...")):
                raise ValueError(f"{where}: {rest!r} takes the rest; nothing may follow it")
            name = raw.removeprefix("...").removesuffix("?")
            if not _NAME.fullmatch(name) or keyword.iskeyword(name) or name in _LUA_RESERVED | {"client"}:
                raise ValueError(f"{where}: {raw!r} cannot be an argument name")
            if raw.startswith("..."):
                rest, rest_in_keys = name, kind == "keys"
            elif raw.endswith("?"):
                optional.append(name)
            elif optional:
                raise ValueError(f"{where}: {name!r} follows an optional argument")
            else:
                (keys if kind == "keys" else args).append(name)
    if optional and rest:
        raise ValueError(f"{where}: optional arguments and a rest do not mix")
    names = [*keys, *args, *optional, rest]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: an argument name is used twice")
    return Signature(tuple(keys), tuple(args), tuple(optional), rest, rest_in_keys)


def _prologue(sig: Signature) -> list[str]:
    """``local a, b = ARGV[1], ARGV[2]``: the names the body uses."""
    lines = []
    for table, names in (("KEYS", sig.keys), ("ARGV", sig.args + sig.optional)):
        if names:
            values = ", ".join(f"{table}[{i}]" for i in range(1, len(names) + 1))
            lines.append(f"local {', '.join(names)} = {values}")
    if sig.rest:
        table, first = ("KEYS", len(sig.keys) + 1) if sig.rest_in_keys else ("ARGV", len(sig.args) + 1)
        if first == 1:
            lines.append(f"local {sig.rest} = {table}")
        else:
            lines.append(f"local {sig.rest} = {{}}")
            lines.append(f"for i = {first}, #{table} do {sig.rest}[#{sig.rest} + 1] = {table}[i] end")
    return lines


def read(name: str, directory: Path = LUA_DIR) -> Source:
    """The script ``name`` (``directory/name.lua``) as Redis will run it, and its signature."""
    path = directory / f"{name}.lua"
    header: dict[str, list[str]] = {}
    body: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := _HEADER.match(line):
            header.setdefault(m.group(1), []).extend(m.group(2).split())
        else:
            body.append(line)
    sig = _signature(header, str(path))
    text = _template("\n".join([*_prologue(sig), *_included(body, set())]) + "\n", str(path))
    return Source(name, text, sig)


def _included(lines: list[str], seen: set[str]) -> list[str]:
    """``lines`` with each ``--#include`` replaced by that library file (itself resolved the same
    way), each file once: a library file includes what it uses, so order takes care of itself."""
    out: list[str] = []
    for line in lines:
        m = _INCLUDE.match(line)
        if not m:
            out.append(line)
        elif m.group(1) not in seen:
            seen.add(m.group(1))
            out += _included((LUA_DIR / m.group(1)).read_text(encoding="utf-8").splitlines(), seen)
    return out


def _function(source: Source, script: AsyncScript, read_only: bool) -> ScriptCall:
    """``name(*, <names>[, client])``, generated from the signature (as ``dataclasses`` generates
    ``__init__``): keyword-only parameters make Python check the names, and a call costs one
    binding of its arguments, as building the two lists by hand did."""
    sig = source.signature
    params = [*sig.keys, *sig.args, *(f"{n}=ABSENT" for n in sig.optional)]
    if sig.rest:
        params.append(sig.rest)
    if not read_only:
        params.append("client=None")
    keys, args = list(sig.keys), list(sig.args)
    if sig.rest:
        (keys if sig.rest_in_keys else args).append("*" + sig.rest)
    body = []
    if sig.optional:
        body.append(f"    args = [{', '.join(args)}] + _given(({', '.join(sig.optional)},))")
    else:
        body.append(f"    args = [{', '.join(args)}]")
    if read_only:
        body.append(f"    return _read_only_call(_script, [{', '.join(keys)}], args)")
    else:
        body.append(f"    return _script(keys=[{', '.join(keys)}], args=args, client=client)")
    code = "\n".join([f"def call(*, {', '.join(params)}):", *body])
    namespace: dict[str, Any] = {
        "ABSENT": ABSENT,
        "_given": _given,
        "_script": script,
        "_read_only_call": read_only_call,
    }
    exec(code, namespace)  # noqa: S102 (code built from validated names only)
    call: ScriptCall = namespace["call"]
    call.__name__ = call.__qualname__ = source.name
    return call


def _given(optional: tuple[Any, ...]) -> list[Any]:
    """The optional arguments given: a prefix of them, none after one left out."""
    if ABSENT not in optional:
        return list(optional)
    n = optional.index(ABSENT)
    if optional.count(ABSENT) != len(optional) - n:
        raise TypeError("an optional script argument was given after one left out")
    return list(optional[:n])


def load(redis: Redis, name: str, *, read_only: bool = False, directory: Path = LUA_DIR) -> ScriptCall:
    """Register script ``name`` on ``redis``; returns it as a function of its named arguments."""
    source = read(name, directory)
    return _function(source, redis.register_script(source.text), read_only)
