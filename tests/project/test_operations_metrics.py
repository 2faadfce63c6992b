"""docs/operations.md's metrics are right about which process exports what.

A real `serve` and a real `worker` (with WORKER_METRICS_PORT) take one request from submit to a
successful delivery; then the API's /metrics and the worker's port are scraped. The metrics table
must name, for every metric, the endpoint where it is actually counted; every metric the doc names
must exist; and wherever the doc mentions a metric only the worker counts, it says where to scrape it
(WORKER_METRICS_PORT): the API lists those names too, empty or at zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import API_KEY, TOKEN, Procs, free_port, signed_callback
from tests.support.receiver import WebhookReceiver, wait_until
from tests.support.servers import ServerThread
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis
from tooling.sandbox import create_sandbox

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
PREFIX = "callback_gateway_"
API, WORKER = "API /metrics", "worker :WORKER_METRICS_PORT/metrics"
CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
MENTION = re.compile(rf"\b{PREFIX}\w+")


@dataclass
class Scrape:
    """Per endpoint: metric family -> the label values of its samples that counted something."""

    counted: dict[str, dict[str, set[str]]]
    families: set[str]

    def endpoints_of(self, family: str) -> set[str]:
        return {endpoint for endpoint, found in self.counted.items() if family in found}


def counted(text: str) -> dict[str, set[str]]:
    """Families with a sample above zero (counters, histograms) or any sample (gauges: a state, not a
    count), with those samples' label values ("" for none). `_created` timestamps are no count."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket", "_sum")):
                continue
            if family.type == "gauge" or sample.value > 0:
                found.setdefault(family.name, set()).update(sample.labels.values() or {""})
    return found


def family_of(name: str) -> str:
    """A name as written in the doc -> its family as the parser names it (counters drop `_total`)."""
    return re.sub(r"_(total|count|sum|bucket|created)$", "", name)


@pytest.fixture(scope="module")
async def scrape(
    redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Scrape:
    receiver = WebhookReceiver()
    hooks = ServerThread(receiver.app()).start()
    sandbox = ServerThread(create_sandbox("MAPROCTEST0123456789", TOKEN)).start()
    port, metrics_port = free_port(), free_port()
    procs = Procs.build(
        tmp_path_factory.mktemp("metrics"),
        redis_server.url,
        port,
        database=postgres_server.url(),
        PLIVO_API_URL=sandbox.url,
        WORKER_METRICS_PORT=metrics_port,
        LOG_LEVEL="WARNING",
    )
    api, worker_metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        procs.serve(port)
        procs.worker()
        async with httpx.AsyncClient(timeout=10) as client:
            await client.post(sandbox.url + "/_sandbox/config", json={"delay": 3600})  # we call back
            body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": hooks.url}]}
            submit = await client.post(
                api + "/v1/requests", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
            )
            assert submit.status_code == 202, submit.text
            api_id = submit.json()["api_id"]
            stored = await client.post(api + "/callbacks/plivo", **signed_callback(api, {"api_id": api_id}))
            assert stored.status_code == 200, stored.text

            async def delivered_and_counted() -> bool:
                if not receiver.received:
                    return False
                try:
                    text = (await client.get(worker_metrics)).text
                except httpx.HTTPError:
                    return False
                found = counted(text)
                # ... and its history copied to PostgreSQL by the archiver.
                return PREFIX + "delivery_latency_seconds" in found and PREFIX + "history_rows" in found

            await wait_until(delivered_and_counted, timeout=20, interval=0.1)
            texts = {
                API: (await client.get(api + "/metrics")).text,
                WORKER: (await client.get(worker_metrics)).text,
            }
    finally:
        procs.close()
        hooks.stop()
        sandbox.stop()
    families = {family.name for text in texts.values() for family in text_string_to_metric_families(text)}
    return Scrape({endpoint: counted(text) for endpoint, text in texts.items()}, families)


def metric_rows() -> list[tuple[str, str, list[str]]]:
    """(family, endpoint, label values listed) for every row of the doc's metrics table."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith(f"`{PREFIX}"):
            name, _, labels, exported_by, _ = cells
            endpoint = WORKER if "WORKER_METRICS_PORT" in exported_by else API
            values = re.findall(r"`(\w+)`", labels.partition(":")[2])
            rows.append((family_of(name.strip("`")), endpoint, values))
    return rows


def paragraphs() -> list[str]:
    """Blank-line separated blocks; each table row and each list item is a block of its own."""
    blocks = []
    for block in re.split(r"\n\s*\n", DOC.read_text()):
        blocks += re.split(r"\n(?=\||\d+\. |- )", block)
    return blocks


async def test_the_stack_counts_on_both_endpoints(scrape: Scrape) -> None:
    assert scrape.endpoints_of(PREFIX + "callbacks") == {API, WORKER}
    assert scrape.endpoints_of(PREFIX + "delivery_attempts") == {WORKER}
    assert scrape.endpoints_of(PREFIX + "delivery_latency_seconds") == {WORKER}
    assert scrape.endpoints_of(PREFIX + "submits") == {API}
    assert scrape.endpoints_of(PREFIX + "workers_alive") == {API}


async def test_every_metric_the_doc_names_exists(scrape: Scrape) -> None:
    mentioned = {family_of(name) for name in MENTION.findall(DOC.read_text())}
    assert mentioned, "docs/operations.md names no metric in full"
    assert mentioned - scrape.families == set()


async def test_the_metrics_table_says_which_endpoint_counts_each_metric(scrape: Scrape) -> None:
    rows = metric_rows()
    documented = {(family, endpoint) for family, endpoint, _ in rows}
    actual = {(family, endpoint) for endpoint, found in scrape.counted.items() for family in found}
    assert actual - documented == set(), "counted there but not in the table"
    assert documented - actual == set(), "the table names an endpoint that does not count it"
    for family, endpoint, values in rows:
        elsewhere = set().union(*(found.get(family, set()) for found in scrape.counted.values()))
        for value in set(values) & elsewhere:
            assert value in scrape.counted[endpoint][family], (
                f"{family}{{{value}}} is not counted on {endpoint}"
            )


async def test_worker_only_metrics_are_always_mentioned_with_the_worker_port(scrape: Scrape) -> None:
    worker_only = {family for family in scrape.counted[WORKER] if scrape.endpoints_of(family) == {WORKER}}
    assert worker_only
    for block in paragraphs():
        named = {family_of(name) for name in MENTION.findall(block)}
        if named & worker_only:
            assert "WORKER_METRICS_PORT" in block, block


def test_no_metric_is_named_without_its_prefix() -> None:
    bare = re.findall(rf"`(?!{PREFIX})(\w+_(?:total|seconds))\b", DOC.read_text())
    assert bare == [], f"write the full name, {PREFIX}...: {bare}"
