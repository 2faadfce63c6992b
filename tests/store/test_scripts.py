"""The script loader (gateway.store.scripts): arguments by name, the library, the key fragments."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.infra.redis_batch import BatchingRedis
from gateway.store import scripts
from gateway.store.keys import ARQ_JOB, LUA_NAMES
from tests.support.store import LUA as TEST_LUA

SCRIPTS = sorted(scripts.LUA_DIR.glob("*.lua")) + sorted(TEST_LUA.glob("*.lua"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.lua").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_every_script_uses_names_only(path: Path) -> None:
    source = scripts.read(path.stem, path.parent)
    assert re.findall(r"KEYS|ARGV", path.read_text()) == [], f"{path.name} reads KEYS/ARGV by hand"
    assert re.findall(r"\{\{[A-Z_]+\}\}", source.text) == []  # every fragment templated


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
async def test_every_script_compiles(path: Path, redis: Redis) -> None:
    await redis.script_load(scripts.read(path.stem, path.parent).text)


def test_fragments_come_from_the_keys_module() -> None:
    text = scripts.read("finish").text
    assert f"'{ARQ_JOB}'" in text and "{{" not in text
    assert set(
        re.findall(r"\{\{([A-Z_]+)\}\}", "".join(p.read_text() for p in scripts.LUA_DIR.rglob("*.lua")))
    ) <= set(LUA_NAMES)


async def test_arguments_are_named_and_checked(tmp_path: Path, redis: Redis) -> None:
    write(tmp_path, "echo", "--! keys: a b\n--! args: x y ...rest\nreturn {a, b, x, y, #rest, rest[2]}\n")
    echo = scripts.load(redis, "echo", directory=tmp_path)
    assert await echo(a="k1", b="k2", x=1, y="two", rest=["r1", "r2"]) == ["k1", "k2", "1", "two", 2, "r2"]
    with pytest.raises(TypeError):
        echo(a="k1", b="k2", x=1, rest=[])  # y missing
    with pytest.raises(TypeError):
        echo(a="k1", b="k2", x=1, y=2, z=3, rest=[])  # z unknown


async def test_optional_arguments_are_a_trailing_prefix(tmp_path: Path, redis: Redis) -> None:
    write(tmp_path, "opt", "--! args: x o1? o2?\nreturn {x, o1 or 'nil', o2 or 'nil'}\n")
    opt = scripts.load(redis, "opt", directory=tmp_path)
    assert await opt(x=1) == ["1", "nil", "nil"]
    assert await opt(x=1, o1="a") == ["1", "a", "nil"]
    with pytest.raises(TypeError):
        opt(x=1, o2="b")  # o1 left out before it


async def test_a_library_function_is_included_once(tmp_path: Path, redis: Redis) -> None:
    write(
        tmp_path,
        "inc",
        "--! args: v\n--#include lib/unpack_id.lua\n--#include lib/ref_lookup.lua\nreturn unpack_id(v)\n",
    )
    text = scripts.read("inc", tmp_path).text
    assert text.count("local function unpack_id") == 1
    inc = scripts.load(redis, "inc", directory=tmp_path)
    assert await inc(v="plain") == "plain"


async def test_a_batching_client_still_batches(tmp_path: Path, redis: Redis) -> None:
    write(tmp_path, "inc", "--! keys: counter\nreturn redis.call('INCR', counter)\n")
    client = BatchingRedis(redis)
    inc = scripts.load(client, "inc", directory=tmp_path)
    assert await inc(counter="c") == 1  # loads the script
    before = (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
    results = [inc(counter="c") for _ in range(5)]
    assert all(isinstance(r, asyncio.Future) for r in results)  # queued in the batch, not sent alone
    assert sorted([await r for r in results]) == [2, 3, 4, 5, 6]
    assert (await redis.info("commandstats"))["cmdstat_evalsha"]["calls"] - before == 5


def test_a_bad_header_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "bad", "--! args: x ...rest y\nreturn 1\n")
    with pytest.raises(ValueError, match="rest"):
        scripts.read("bad", tmp_path)
    write(tmp_path, "bad2", "--! args: end\nreturn 1\n")
    with pytest.raises(ValueError, match="argument name"):
        scripts.read("bad2", tmp_path)
