"""What the agent process loads before it runs: only what every agent uses.

Each module an agent imports costs every node resident memory for its whole life (issue #20
counts RSS), and each one delays every start, a join's included: prometheus_client (~1.6 MB
here) is loaded only by an agent that serves metrics, which is opt-in (`node.metrics`, tested
serving in test_metrics_server); Docker's SDK (a tenth of a second) by the executor, in a
thread, once the agent runs (`Agent._run_executor`).
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = "import json, sys, swarmlet.node.main; print(json.dumps(sorted(sys.modules)))"


def _loaded(prefix: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return [m for m in json.loads(out.stdout) if m == prefix or m.startswith(prefix + ".")]


def test_the_agent_loads_prometheus_client_only_to_serve_metrics() -> None:
    assert _loaded("prometheus_client") == []
    assert _loaded("swarmlet.node.metrics") == []


def test_the_agent_loads_dockers_sdk_only_once_it_runs() -> None:
    assert _loaded("docker") == []
    assert _loaded("requests") == []
    assert _loaded("swarmlet.executor.docker_runtime") == []


def test_the_probe_sees_what_the_agent_loads() -> None:
    # Without this, a probe that saw nothing would pass the test above.
    assert "swarmlet.node.agent" in _loaded("swarmlet.node")
