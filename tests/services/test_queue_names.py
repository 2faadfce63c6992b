"""Queue targets may not name the gateway's keys or arq's: refused with 400 on submit and on
proxy-token creation, before anything goes upstream."""

from __future__ import annotations

from typing import Any

import pytest
from arq import constants

from tests.conftest import Stack

TOKEN_SECRET = "proxy-secret-" + "s" * 32
HEALTH = constants.health_check_key_suffix


def reserved_names(prefix: str) -> list[str]:
    """Every reserved form, for a gateway whose GATEWAY_KEY_PREFIX is ``prefix``."""
    return [
        prefix + "queue",  # the gateway's own arq queue: its job functions would run on user events
        prefix + "subs",  # the subscription index
        prefix,
        constants.job_key_prefix + "x",
        constants.result_key_prefix + "x",
        constants.in_progress_key_prefix + "x",
        constants.retry_key_prefix + "x",
        constants.abort_jobs_ss,
        "billing" + HEALTH,  # what a worker on queue `billing` overwrites
        constants.default_queue_name + HEALTH,
        "arq:job",  # its worker's health-check key, arq:job:health-check, is a job key
        prefix.rstrip(":"),  # its worker's health-check key lands under the gateway's prefix
    ]


MALFORMED = ["", "x" * 129, "bill ing", "billing\n", "bïlling", "billing/x"]
ALLOWED = ["billing", constants.default_queue_name, "x" * 128, "team.billing:v2", "arq", "cg.billing"]


def names_the_field(error: str, name: str) -> bool:
    # The model's errors and the route's read the same: no union tag in the location.
    return error.startswith("targets.1.queue: ")


def queue_target(name: str) -> dict[str, Any]:
    return {"type": "queue", "queue": name, "function": "on_result"}


def test_the_rule_for_the_default_prefix() -> None:
    from gateway.services.queue_names import refusal

    for name in reserved_names("cg:") + MALFORMED:
        assert refusal(name, "cg:"), name
    for name in ALLOWED:
        assert refusal(name, "cg:") is None, name
    assert "GATEWAY_KEY_PREFIX" in (refusal("cg:queue", "cg:") or "")
    assert "arq:job:" in (refusal("arq:job:1", "cg:") or "")
    assert refusal("cg:queue", "") is None  # no prefix, no prefix check


async def test_submit_refuses_reserved_queue_names(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False)
    prefix = stack.settings.GATEWAY_KEY_PREFIX
    for name in reserved_names(prefix) + MALFORMED:
        body = {
            "resource": "Message/",
            "params": {"src": "1", "dst": "2", "text": "hi"},
            "targets": [{"type": "webhook", "url": stack.hook_url()}, queue_target(name)],
        }
        response = await stack.submit(body)
        assert response.status_code == 400, (name, response.text)
        assert set(response.json()) == {"api_id", "error"}
        assert names_the_field(response.json()["error"], name), (name, response.text)
    assert stack.sandbox_state.requests == []  # nothing refused went upstream
    for name in ALLOWED:
        body = {"resource": "Message/", "params": {"src": "1", "dst": "2", "text": "hi"}}
        body["targets"] = [queue_target(name)]
        response = await stack.submit(body)
        assert response.status_code == 202, (name, response.text)


async def test_proxy_token_creation_refuses_reserved_queue_names(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    url = stack.gateway.url + "/v1/proxy_tokens"
    for name in reserved_names(stack.settings.GATEWAY_KEY_PREFIX) + MALFORMED:
        spec = {"targets": [queue_target("billing"), queue_target(name)]}
        response = await stack.client.post(url, json=spec, headers=stack.auth)
        assert response.status_code == 400, (name, response.text)
        assert names_the_field(response.json()["error"], name), (name, response.text)
    for name in ALLOWED:
        response = await stack.client.post(url, json={"targets": [queue_target(name)]}, headers=stack.auth)
        assert response.status_code == 201, (name, response.text)
        assert response.json()["proxy_token"]["targets"][0]["queue"] == name


@pytest.mark.parametrize("prefix", ["cg:", "tenant-a:", "arq:"])
def test_the_gateway_prefix_is_a_setting(prefix: str) -> None:
    from gateway.services.queue_names import refusal

    assert refusal(prefix + "queue", prefix)
    assert refusal("billing", prefix) is None
