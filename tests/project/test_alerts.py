"""deploy/prometheus/alerts.yml: well-formed rules, on metrics the gateway really exposes, with the
history thresholds below the bound at which the gateway starts refusing work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gateway.infra import metrics
from gateway.settings import Settings

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exposed() -> set[str]:
    """Every metric family name on /metrics (counters also as ``_total``)."""
    text = metrics.render(metrics.Gauges()).decode()
    names = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    out = {name for name, _ in names}
    out |= {name + "_total" for name, kind in names if kind == "counter"}
    return out


def test_every_rule_is_complete() -> None:
    found = rules()
    assert len(found) >= 7
    assert len({r["alert"] for r in found}) == len(found)
    for rule in found:
        assert rule["alert"].startswith("CallbackGateway")
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_every_rule_watches_a_metric_the_gateway_exposes() -> None:
    have = exposed()
    for rule in rules():
        used = set(re.findall(r"callback_gateway_\w+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= have, (rule["alert"], used - have)


def test_history_alerts_fire_before_the_gateway_refuses_work() -> None:
    bound = Settings.model_fields["GATEWAY_HISTORY_BACKLOG_MAX"].default
    thresholds = {}
    for rule in rules():
        match = re.fullmatch(r"max\(callback_gateway_history_backlog\) > (\d+)", rule["expr"])
        if match:
            thresholds[rule["labels"]["severity"]] = int(match.group(1))
    assert thresholds["warning"] < thresholds["critical"] < bound
