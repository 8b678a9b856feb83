"""The control API calls behind the dashboard's actions: the same ones, with the same arguments,
as the CLI's `service scale`, `service update --force`, `service rollback`, `node update
--availability` and `service rm` (see `swarmlet/cli/service.py` and `swarmlet/cli/node.py`).

`perform` returns what the agent answered in a few words; it raises what the control client
raises (a `SwarmletError` with the agent's message, e.g. that a worker needs a manager), which the
driver shows in place of the question.
"""

from __future__ import annotations

import dataclasses

from swarmlet.api.control_socket import ControlClient
from swarmlet.dashboard.keys import Action, ActionKind
from swarmlet.state.model import ServiceSpec
from swarmlet.wire import codec as wire


async def restart(client: ControlClient, service: str) -> int:
    """`service update --force`: the current spec with `force_update` bumped; the new version."""
    spec = wire.decode(await client.call("service.spec", service=service), expect=(ServiceSpec,))
    assert isinstance(spec, ServiceSpec)
    bumped = dataclasses.replace(spec, force_update=spec.force_update + 1)
    result = await client.call("service.update", service=service, spec=wire.encode(bumped))
    return int(result["version"])


async def perform(client: ControlClient, action: Action) -> str:
    """Carry out `action` through the control socket; a short account of the answer."""
    target = action.target
    if action.kind is ActionKind.SCALE:
        if action.replicas is None:
            raise ValueError("scale without a replica count")
        await client.call("service.scale", scale={target: action.replicas})
        return f"{action.label} scaled to {action.replicas}"
    if action.kind is ActionKind.RESTART:
        version = await restart(client, target)
        return f"{action.label} restarting (version {version})"
    if action.kind is ActionKind.ROLLBACK:
        await client.call("service.rollback", service=target)
        return f"{action.label} rolling back"
    if action.kind in (ActionKind.DRAIN, ActionKind.ACTIVATE):
        availability = "drain" if action.kind is ActionKind.DRAIN else "active"
        await client.call(
            "node.update", node=target, availability=availability, label_add=[], label_rm=[]
        )
        return f"node {action.label} is now {availability}"
    removed = (await client.call("service.rm", services=[target]))["removed"]
    return f"removed {', '.join(str(r) for r in removed) or action.label}"
