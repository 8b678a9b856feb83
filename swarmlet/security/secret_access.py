"""Who may receive which secrets: the decision a manager takes before it sends any.

A node asks a manager for the secrets of one of its tasks (`swarmlet.security.secret_delivery`); the
manager answers only if its replicated state says so. The rule (Swarm's: "secrets are sent only
to nodes running a task that uses them"):

  * the task exists and is assigned to the asking node;
  * it is meant to run (desired state RUNNING, not recorded as finished): a stopped or replaced
    task has no use for secrets any more;
  * the node has a public key, to which the values will be sealed;
  * the secrets granted are exactly those its service's current spec references (the spec the
    executor starts the container from). They exist: the state machine refuses a spec that
    names a missing secret and the removal of a secret in use.
  * the service's registry credential (`--with-registry-auth`, `Service.registry_auth`), if it
    has one, goes with them: the node pulls the task's image with it.

The asker's identity needs no proof here: the values are sealed to the public key in the named
node's record, so a member that claims to be another node receives nothing it can open.

Pure: reads a `ClusterState`, returns a value; no I/O, no keys (it checks the shape of one).
"""

from __future__ import annotations

from dataclasses import dataclass

from swarmlet.crypto import check_public_key
from swarmlet.errors import RemoteProtocolError
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import TaskState


@dataclass(frozen=True, slots=True)
class SecretGrant:
    """Either the names of the secrets the node may receive, or why it may receive none."""

    names: tuple[str, ...] = ()
    refusal: str = ""  # non-empty: refused
    registry_auth: bool = False  # the service's registry credential too

    @property
    def ok(self) -> bool:
        return not self.refusal


def grant_secrets(state: ClusterState, node_id: str, task_id: str) -> SecretGrant:
    task = state.tasks.get(task_id)
    if task is None:
        return SecretGrant(refusal=f"no task {task_id}")
    if task.node_id != node_id:
        return SecretGrant(refusal=f"task {task_id} is not assigned to node {node_id}")
    service = state.services.get(task.service_id)  # None only once the task is shut down
    if service is None or task.desired_state is not TaskState.RUNNING or task.state.terminal:
        return SecretGrant(refusal=f"task {task_id} is not meant to run")
    node = state.nodes.get(node_id)
    try:
        check_public_key(node.public_key if node is not None else b"")
    except RemoteProtocolError:
        return SecretGrant(refusal=f"node {node_id} has no public key to seal secrets to")
    return SecretGrant(
        tuple(dict.fromkeys(ref.name for ref in service.spec.secrets)),
        registry_auth=bool(service.registry_auth),
    )
