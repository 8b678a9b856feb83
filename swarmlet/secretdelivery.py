"""The files of a task's secrets and configs: from the local state, or asked of a manager.

Secrets' values are sealed with the managers' key in the replicated state (`keyring`), so:
  * a manager opens them from its own state, after the same check it applies to anyone who asks
    (`secretaccess.grant_secrets`);
  * a worker sends a `SecretsRequest` naming the task to a manager (the leader first, then the
    other managers gossip sees alive) over the cluster TCP channel. The manager first applies
    its log at least as far as the worker has (so a task just assigned is not refused for lag),
    decides with `grant_secrets`, and answers with the values sealed to the public key in the
    worker's Node record and bound to node and task (`crypto.delivery_aad`): no other member can
    open them, even with the cluster key, and a member claiming to be that node gains nothing.
Configs are not secret: every node reads them from its own state.

When no manager delivers (none reachable, a refusal), `SecretsUnavailableError` carries each
manager's answer; the executor rejects the task with it and the orchestrator retries as for any
failed start. Values are held in memory only, until `secretfiles` writes them to a tmpfs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from swarmlet import wire
from swarmlet.crypto import ManagerKeys, delivery_aad, seal_to
from swarmlet.errors import RemoteProtocolError, SecretsUnavailableError
from swarmlet.keyring import KeyRing
from swarmlet.model import Task
from swarmlet.rpc import SecretsReply, SecretsRequest, SecretValues
from swarmlet.secretaccess import grant_secrets
from swarmlet.state import ClusterState
from swarmlet.transport import Address, FramedStream, Transport

log = logging.getLogger(__name__)

# Per manager asked, its wait for its log to catch up included; past it, the next one is asked.
ASK_TIMEOUT_S = 5.0
# How long a manager waits to apply the asker's index before answering that it lags.
CATCH_UP_TIMEOUT_S = 3.0

TaskFiles = dict[tuple[str, bool], bytes]  # (name, is_config) -> content


class AppliedLog(Protocol):
    """What delivery needs of the Raft driver (`raft.driver.RaftDriver`)."""

    @property
    def leader_id(self) -> str | None: ...

    @property
    def applied(self) -> int: ...

    async def wait_applied(self, index: int) -> None: ...


class SecretDelivery:
    def __init__(
        self,
        *,
        node_id: str,
        keyring: KeyRing,
        state: Callable[[], ClusterState],
        raft: AppliedLog,
        transport: Transport,
        resolve: Callable[[str], Address | None],
        is_ready: Callable[[str], bool],
    ) -> None:
        self.node_id = node_id
        self.keyring = keyring
        self._state = state
        self.raft = raft
        self.transport = transport
        self._resolve = resolve
        self._is_ready = is_ready

    # ------------------------------------------------------------------------ this node's tasks

    async def task_files(self, task: Task) -> TaskFiles:
        """Everything the task's secrets and configs contain. SecretsUnavailableError if not."""
        state = self._state()
        service = state.services.get(task.service_id)
        if service is None:
            raise SecretsUnavailableError(f"the service of task {task.id} was removed")
        files: TaskFiles = {}
        for ref in service.spec.configs:
            item = state.secret_by_name(ref.name, is_config=True)
            if item is None:
                raise SecretsUnavailableError(f"config {ref.name!r} not found")
            files[(ref.name, True)] = item.data
        if service.spec.secrets:
            keys = self.keyring.managers
            if keys is not None:
                values = _open_granted(state, keys, self.node_id, task.id)
            else:
                values = await self._ask_managers(task.id)
            files.update(((name, False), value) for name, value in values.items())
        return files

    async def _ask_managers(self, task_id: str) -> dict[str, bytes]:
        state = self._state()
        leader = self.raft.leader_id
        managers = sorted(
            (n for n in state.managers() if n.id != self.node_id and self._is_ready(n.id)),
            key=lambda n: (n.id != leader, n.name),
        )
        request = SecretsRequest(self.node_id, task_id, self.raft.applied)
        answers: list[str] = []
        for manager in managers:
            try:
                reply = await self._ask(manager.id, request)
                if not reply.ok:
                    answers.append(f"{manager.name} refused: {reply.error}")
                    continue
                plain = self.keyring.open_delivery(reply.sealed, task_id)
                delivered: SecretValues = wire.decode(plain, expect=(SecretValues,))
                return dict(delivered.values)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                answers.append(f"{manager.name} unreachable ({type(exc).__name__}: {exc})")
            except RemoteProtocolError as exc:
                answers.append(f"{manager.name} sent an invalid answer ({exc})")
        why = "; ".join(answers) or "no manager is reachable"
        raise SecretsUnavailableError(f"no manager delivered the secrets of task {task_id}: {why}")

    async def _ask(self, manager_id: str, request: SecretsRequest) -> SecretsReply:
        addr = self._resolve(manager_id)
        if addr is None:
            raise OSError("no address known")
        with trio.fail_after(ASK_TIMEOUT_S):
            stream = await self.transport.connect(addr)
            async with stream.stream:
                await stream.send(request)
                reply: SecretsReply | None = await stream.receive(expect=(SecretsReply,))
        if reply is None:
            raise RemoteProtocolError("the connection closed without an answer")
        return reply

    # ------------------------------------------------------------------------ serving others

    async def serve(self, stream: FramedStream, request: object) -> None:
        """A manager's answer to a `SecretsRequest` (a stream handler of the agent)."""
        assert isinstance(request, SecretsRequest)
        reply = await self._decide(request)
        if not reply.ok:
            self.transport.counters["secrets_refused"] += 1
            log.warning(
                "secrets of task %s for node %s refused: %s",
                request.task_id,
                request.node_id,
                reply.error,
            )
        await stream.send(reply)

    async def _decide(self, request: SecretsRequest) -> SecretsReply:
        keys = self.keyring.managers
        if keys is None:
            return SecretsReply(False, error="not a manager holding the managers' key")
        with trio.move_on_after(CATCH_UP_TIMEOUT_S):
            await self.raft.wait_applied(request.min_index)
        if self.raft.applied < request.min_index:
            return SecretsReply(False, error=f"its log is behind index {request.min_index}")
        state = self._state()
        try:
            values = _open_granted(state, keys, request.node_id, request.task_id)
            sealed = seal_to(
                state.nodes[request.node_id].public_key,
                wire.encode(SecretValues(values)),
                delivery_aad(request.node_id, request.task_id),
            )
        except (SecretsUnavailableError, RemoteProtocolError) as exc:
            return SecretsReply(False, error=str(exc))
        return SecretsReply(True, sealed=sealed)


def _open_granted(
    state: ClusterState, keys: ManagerKeys, node_id: str, task_id: str
) -> dict[str, bytes]:
    """The values `grant_secrets` allows `node_id` for `task_id`, opened with the managers' key."""
    grant = grant_secrets(state, node_id, task_id)
    if not grant.ok:
        raise SecretsUnavailableError(grant.refusal)
    values = {}
    for name in grant.names:
        secret = state.secret_by_name(name)
        assert secret is not None  # see `secretaccess`: a secret in use cannot be removed
        try:
            values[name] = keys.open_secret(secret.data)
        except RemoteProtocolError:
            raise SecretsUnavailableError(f"secret {name!r} does not open: it is damaged") from None
    return values
