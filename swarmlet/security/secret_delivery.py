"""The files of a task's secrets and configs: from the local state, or asked of a manager.

Secrets' values are sealed with the managers' key in the replicated state (`keyring`), so:
  * a manager opens them from its own state, after the same check it applies to anyone who asks
    (`secretaccess.grant_secrets`);
  * a worker sends a `SecretsRequest` naming the task, with a fresh nonce, to a manager (the
    leader first, then the other managers gossip sees alive) over the cluster TCP channel. The
    manager refuses at once an index beyond its commit index (the leader's is never behind a
    worker's), else applies its log at least as far as the worker has (so a task just assigned
    is not refused for lag), decides with `grant_secrets`, and answers with the values sealed to
    the public key in the worker's Node record and bound to node, task and nonce
    (`crypto.delivery_aad`), signed with the managers' Ed25519 key (`ManagerKeys.sign`). No
    other member can open the values, even with the cluster key, and a member claiming to be
    that node gains nothing.
Configs are not secret: every node reads them from its own state. A service's registry
credential (`--with-registry-auth`) travels as one more secret value, under the reserved name
`executor.registry_auth.REGISTRY_AUTH_NAME`, by the same path and under the same decision.

Forged answers. The cluster channel is sealed with the cluster key, which workers hold too, and
anyone can seal values to a worker's public key: without the signature, whoever answers in a
manager's place (at an address taken over, or on the path) could have the worker mount values of
its choosing. The worker therefore opens a delivery only if the managers' public key in its
state verifies it, and only for the nonce of its own request, so an old delivery cannot be
replayed either. What such a member can still do is refuse or stay silent: the worker asks the
next manager, and if none delivers the task is rejected and retried.

A rotation of the managers' key (`security.managers_key_rotation`) changes the signing key: a
manager that applied it signs under the new key before the worker has applied it. The worker
then waits briefly for its log to bring the new key and checks again (`_open`); it never accepts
the previous key, which the demoted manager may have kept. A manager never signs under an older
key than the worker's state names: it applies the worker's index before answering.

When no manager delivers (none reachable, a refusal, an invalid answer) within `ASK_TOTAL_S`,
`SecretsUnavailableError` carries each manager's answer; the executor rejects the task with it
and the orchestrator retries as for any failed start. Values are held in memory only, until
`secretfiles` writes them to a tmpfs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

import trio

from swarmlet.crypto import ManagerKeys, delivery_aad, seal_to
from swarmlet.errors import RemoteProtocolError, SecretsUnavailableError
from swarmlet.executor.registry_auth import REGISTRY_AUTH_NAME
from swarmlet.security.keyring import KeyRing
from swarmlet.security.registry_auth import open_sealed_credential
from swarmlet.security.secret_access import grant_secrets
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Task
from swarmlet.wire import codec as wire
from swarmlet.wire.peer_rpc import SecretsReply, SecretsRequest, SecretValues
from swarmlet.wire.transport import Address, FramedStream, Transport

log = logging.getLogger(__name__)

# Per manager asked, its wait for its log to catch up included; past it, the next one is asked.
ASK_TIMEOUT_S = 2.0
# All managers together: the asking holds one of the executor's start slots.
ASK_TOTAL_S = 5.0
# How long a manager waits to apply the asker's index before answering that it lags: committed
# entries apply in milliseconds, so this is for a busy manager (less than ASK_TIMEOUT_S).
CATCH_UP_TIMEOUT_S = 1.0
_NONCE_BYTES = 16

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
        commit_index: Callable[[], int],
        transport: Transport,
        resolve: Callable[[str], Address | None],
        is_ready: Callable[[str], bool],
    ) -> None:
        self.node_id = node_id
        self.keyring = keyring
        self._state = state
        self.raft = raft
        self._commit_index = commit_index
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
        if service.spec.secrets or service.registry_auth:
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
        answers: list[str] = []
        with trio.move_on_after(ASK_TOTAL_S) as overall:
            for manager in managers:
                nonce = os.urandom(_NONCE_BYTES)
                request = SecretsRequest(self.node_id, task_id, self.raft.applied, nonce)
                try:
                    reply = await self._ask(manager.id, request)
                    if not reply.ok:
                        answers.append(f"{manager.name} refused: {reply.error}")
                        continue
                    plain = await self._open(reply, task_id, nonce)
                    delivered: SecretValues = wire.decode(plain, expect=(SecretValues,))
                    return dict(delivered.values)
                except trio.TooSlowError:
                    answers.append(f"{manager.name} did not answer within {ASK_TIMEOUT_S:g} s")
                except (OSError, trio.BrokenResourceError) as exc:
                    answers.append(f"{manager.name} unreachable ({type(exc).__name__}: {exc})")
                except RemoteProtocolError as exc:
                    answers.append(f"{manager.name} sent an invalid answer ({exc})")
        if overall.cancelled_caught:
            answers.append(f"{manager.name} was still being asked after {ASK_TOTAL_S:g} s in all")
        why = "; ".join(answers) or "no manager is reachable"
        raise SecretsUnavailableError(f"no manager delivered the secrets of task {task_id}: {why}")

    async def _open(self, reply: SecretsReply, task_id: str, nonce: bytes) -> bytes:
        """The delivery opened once its signature holds under the managers' public key of this
        node's state, or of its state a little later: the manager signs with the key of a state
        at least as new as this node's (it applies this node's index first), so a signature this
        node's state refuses may be under a key rotated in an entry this node has not applied
        yet. It waits for its log to move past that key (up to CATCH_UP_TIMEOUT_S), then checks
        again; never under an older key, which a demoted manager may have kept."""
        key = self._state().managers_public_key
        try:
            return self.keyring.open_delivery(reply, task_id, nonce)
        except RemoteProtocolError:
            with trio.move_on_after(CATCH_UP_TIMEOUT_S):
                while self._state().managers_public_key == key:
                    await self.raft.wait_applied(self.raft.applied + 1)
            if self._state().managers_public_key == key:
                raise
        self.transport.counters["secrets_delivery_rechecked"] += 1
        return self.keyring.open_delivery(reply, task_id, nonce)

    async def _ask(self, manager_id: str, request: SecretsRequest) -> SecretsReply:
        addr = self._resolve(manager_id)
        if addr is None:
            raise OSError("no address known")
        with trio.fail_after(ASK_TIMEOUT_S):
            stream = await self.transport.connect(addr, node_id=manager_id, manager=True)
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
        if stream.peer is None or stream.peer.node_id != request.node_id:
            # Secrets go to the node that runs the task, asking in its own name: the request's
            # node id is checked against the connection's certificate.
            asker = stream.peer.node_id if stream.peer is not None else "?"
            reply = SecretsReply(False, error=f"asked by {asker} for {request.node_id}")
        else:
            reply = await self._decide(request)
        if not reply.ok:
            self.transport.counters["secrets_refused"] += 1
            log.warning(  # fields cut: the asker chooses them (a 4 MiB id was a 12 MiB line)
                "secrets of task %.80r for node %.80r refused: %.300s",
                request.task_id,
                request.node_id,
                reply.error,
            )
        await stream.send(reply)

    async def _decide(self, request: SecretsRequest) -> SecretsReply:
        keys = self.keyring.managers
        if keys is None:
            return SecretsReply(False, error="not a manager holding the managers' key")
        commit_index = self._commit_index()
        if request.min_index > commit_index:
            # Nothing this manager knows reaches that far: waiting could last forever.
            return SecretsReply(
                False, error=f"index {request.min_index} is beyond its commit index {commit_index}"
            )
        with trio.move_on_after(CATCH_UP_TIMEOUT_S):
            await self.raft.wait_applied(request.min_index)
        if self.raft.applied < request.min_index:
            return SecretsReply(False, error=f"its log is behind index {request.min_index}")
        state = self._state()
        aad = delivery_aad(request.node_id, request.task_id, request.nonce)
        try:
            values = _open_granted(state, keys, request.node_id, request.task_id)
            sealed = seal_to(
                state.nodes[request.node_id].public_key, wire.encode(SecretValues(values)), aad
            )
        except (SecretsUnavailableError, RemoteProtocolError) as exc:
            return SecretsReply(False, error=str(exc))
        return SecretsReply(True, sealed=sealed, signature=keys.sign(aad + sealed))


def _open_granted(
    state: ClusterState, keys: ManagerKeys, node_id: str, task_id: str
) -> dict[str, bytes]:
    """The values `grant_secrets` allows `node_id` for `task_id`, opened with the managers' key."""
    grant = grant_secrets(state, node_id, task_id)
    if not grant.ok:
        raise SecretsUnavailableError(grant.refusal)
    values = {}
    for name in grant.names:
        if name == REGISTRY_AUTH_NAME:
            raise SecretsUnavailableError(f"secret name {name!r} is reserved")
        secret = state.secret_by_name(name)
        assert secret is not None  # see `secretaccess`: a secret in use cannot be removed
        try:
            values[name] = keys.open_secret(secret.id, secret.data)
        except RemoteProtocolError:
            raise SecretsUnavailableError(f"secret {name!r} does not open: it is damaged") from None
    if grant.registry_auth:
        service_id = state.tasks[task_id].service_id
        sealed = state.services[service_id].registry_auth
        values[REGISTRY_AUTH_NAME] = open_sealed_credential(keys, service_id, sealed)
    return values
