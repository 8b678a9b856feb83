"""The Grafana dashboard shipped in deploy/grafana: well formed, and every swarmlet metric it
queries is one the collector exposes (a renamed metric must not leave an empty panel behind).
The integration test `tests/integration/test_metrics.py` runs its queries on a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.node.test_metrics import a_busy_agent, samples

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "swarmlet.json"


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", ())]


def test_dashboard_panels_have_unique_ids_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], panel["title"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables


def test_every_swarmlet_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = {name for name, _ in samples(a_busy_agent(leader=True))}
    queried = {m for q in dashboard_queries() for m in re.findall(r"\bswarmlet_\w+", q)}
    assert queried, "the dashboard queries no swarmlet metric"
    assert queried <= exposed, sorted(queried - exposed)
