"""docs/walkthrough.md as a newcomer runs it: a real `callback-gateway dev`, the `export` line its
banner prints, then every ```sh block of the document in order in one bash, each block's output
checked against the ```text block that follows it (every line of it must be printed; ``<...>``
matches any value, ``...`` stands for lines left out). The walkthrough cannot rot without this
test failing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tooling.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "walkthrough.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
PLACEHOLDER = re.compile(r"<[^<>\s]*>")
MARK = "@@walkthrough-step@@"
# What the doc tells the reader to pick: the test picks a free port instead.
HOOK_PORT_LINE = "export HOOK_PORT=8002"


@dataclass
class Step:
    script: str
    expected: list[str]  # empty: the step promises no output


def steps(text: str) -> list[Step]:
    """Each ```sh block, with the ```text block right after it (if any) as its promised output."""
    found: list[Step] = []
    fences = list(FENCE.finditer(text))
    for i, fence in enumerate(fences):
        if fence.group(1) != "sh":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        promised = after is not None and after.group(1) == "text"
        found.append(Step(fence.group(2), after.group(2).splitlines() if after and promised else []))
    return found


def line_pattern(line: str) -> re.Pattern[str]:
    parts = PLACEHOLDER.split(line.strip())
    return re.compile(".+".join(re.escape(part) for part in parts))


def unmet(expected: list[str], output: list[str]) -> list[str]:
    """The promised lines that no line of ``output`` matches. Order is not checked: a webhook
    receiver running in the background prints when its delivery comes, before or after the
    command that caused it."""
    got = [line.strip() for line in output]
    return [
        line
        for line in expected
        if line.strip() not in ("", "...") and not any(line_pattern(line).fullmatch(g) for g in got)
    ]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "PLIVO_", "GATEWAY_", "WORKER_", "DATABASE_"))
    }
    env.update(extra)
    return env


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`callback-gateway dev` on a free port with its own Redis (REDIS_URL unset: never the one on
    6379); yields its banner."""
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "dev", "--port", str(free_port())],
            cwd=tmp_path,
            env=clean_env(LOG_LEVEL="WARNING"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C stops everything" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield log.read_text(), log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_walkthrough_runs_as_written(dev: tuple[str, Path], tmp_path: Path) -> None:
    banner, log = dev
    exports = re.search(r"^\s*(export GW=.*)$", banner, re.M)
    assert exports, banner
    redis = re.search(r"^\s*redis\s+(\S+)", banner, re.M)
    assert redis and ":6379" not in redis.group(1), banner
    text = DOC.read_text()
    # The example banner in the doc names the variables the real one exports.
    example = re.search(r"^\s*export GW=.*$", text, re.M)
    assert example and re.findall(r"(\w+)=", example.group(0)) == re.findall(r"(\w+)=", exports.group(1))
    assert HOOK_PORT_LINE in text
    found = steps(text.replace(HOOK_PORT_LINE, f"export HOOK_PORT={free_port()}"))
    assert len(found) >= 10
    script = "\n".join([exports.group(1), *(f"echo {MARK}\n{step.script}" for step in found)])
    run = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the receiver it starts goes with it
    )
    try:
        output, _ = run.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    sections = output.split(MARK + "\n")[1:]
    assert len(sections) == len(found), output
    failures = [
        f"--- step {n}:\n{step.script}\n--- promised missing: {missing}\n--- got:\n{section}"
        for n, (step, section) in enumerate(zip(found, sections, strict=True))
        if (missing := unmet(step.expected, section.splitlines()))
    ]
    assert not failures, "\n".join(failures) + "\n--- dev:\n" + log.read_text()[-3000:]
    assert "Traceback" not in output, output
