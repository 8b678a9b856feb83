"""The control API's operations: validate input, read or write the cluster state, shape results.

Results are plain JSON-like values; the `swarmlet` command prints them (tables, or JSON with
`--format json`, which is the contract scripts and other checks rely on).

Reads are served from the local replica after a ReadIndex barrier, so they are linearizable while
a leader is reachable; without one they fall back to the local state and say so (`stale: true`),
which keeps `node ls` and the dashboard useful during an election or a partition.

Writes to the cluster are a manager's (`managers_only`), as in Swarm: a worker's control API
refuses them ("this node is not a manager: run it on a manager") and serves reads. The leader
checks it again: a forwarded write must be authenticated with the managers' key
(`swarmlet.security.propose_auth`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from swarmlet import crypto
from swarmlet.api.cluster import ClusterAccess, LocalAgent
from swarmlet.api.control_socket import Emit, Handler, StreamHandler
from swarmlet.errors import NoLeaderError, UsageError
from swarmlet.leader.voters import cannot_apply_the_log
from swarmlet.security import managers_key_rotation
from swarmlet.security.keyring import rotate_cluster_key
from swarmlet.state.commands import (
    Batch,
    Command,
    RemoveNode,
    RotateManagersKey,
    RotateToken,
    UpdateNode,
)
from swarmlet.state.generic_resources import advertised_text
from swarmlet.state.machine import ApplyResult
from swarmlet.state.model import Availability, Node, Role, TaskState

# A node's labels, keys and values together, in characters. A node's record reaches every worker
# in one frame of its view (64 MiB at most); labels added 14 MB at a time made one no worker
# could take, and every session broke (review). swarmkit holds a whole node to the 1.5 MiB of
# one transaction.
MAX_NODE_LABEL_CHARS = 1024 * 1024


def _label_chars(labels: Mapping[str, str]) -> int:
    return sum(len(k) + len(v) for k, v in labels.items())


def _str_arg(args: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = args.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise UsageError(f"{key}: expected a non-empty string")
    return value


def managers_only(cluster: ClusterAccess, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """`handlers` (cluster writes), each refused with a UsageError on a node that does not
    hold the managers' key (`KeyRing.require_managers`)."""

    def guard(handler: Handler) -> Handler:
        async def guarded(args: dict[str, Any]) -> Any:
            cluster.keyring.require_managers()
            return await handler(args)

        return guarded

    return {op: guard(handler) for op, handler in handlers.items()}


def refuse_on_a_worker(cluster: ClusterAccess) -> None:
    """UsageError on a worker that holds only its view of the state (`state.worker_view`): what
    it could answer of services, tasks, secrets or stacks would be its own part of the cluster,
    not the cluster."""
    if cluster.reads_view():
        managers = sorted(n.name for n in cluster.state.managers())
        raise UsageError(
            "this node is a worker: it holds only its own tasks' part of the cluster "
            f"state; run this on a manager ({', '.join(managers) or 'none known'})"
        )


def cluster_reads(cluster: ClusterAccess, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    """`handlers` (reads of services, tasks, secrets, stacks), each refused on a worker
    (`refuse_on_a_worker`)."""

    def guard(handler: Handler) -> Handler:
        async def guarded(args: dict[str, Any]) -> Any:
            refuse_on_a_worker(cluster)
            return await handler(args)

        return guarded

    return {op: guard(handler) for op, handler in handlers.items()}


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key or key != key.strip():
        raise UsageError(f"invalid label {text!r}: expected KEY=VALUE")
    return key, value if sep else ""


# A removal is sealed against this replica's members (see `node_rm`): tried again when one joined
# or left meanwhile, a few times, each after a read barrier.
_REMOVE_ATTEMPTS = 3


class Control:
    def __init__(self, agent: LocalAgent) -> None:
        self.agent = agent

    # ------------------------------------------------------------------------ helpers

    async def _commit(self, command: Command) -> ApplyResult:
        result = await self.agent.write(command)
        if not result.ok:
            raise UsageError(result.error)
        return result

    def _node(self, ref: str) -> Node:
        node = self.agent.state.find_node(ref)
        if node is None:
            raise UsageError(f"no such node: {ref}")
        return node

    def node_view(self, node: Node) -> dict[str, Any]:
        agent = self.agent
        meta = agent.node_meta(node.id) if node.id != agent.node_id else None
        conf = agent.raft.core.conf
        view = agent.reads_view()  # a worker's view: its own tasks only, no Raft configuration
        tasks = agent.state.tasks.on_node(node.id).values()
        return {
            "id": node.id,
            "hostname": node.name,
            "addr": node.addr,
            "publish_addr": node.publish_addr,
            "status": "ready" if agent.is_ready(node.id) else "down",
            "availability": node.availability.value,
            "role": node.role.value,
            "leader": node.id == agent.replica.leader_id,
            "raft": "unknown"
            if view
            else "voter"
            if node.id in conf.voters
            else ("learner" if node.id in conf.learners else "none"),
            "labels": dict(node.labels),
            "cpus": node.resources.nano_cpus / 1e9,
            "memory_bytes": node.resources.memory_bytes,
            # what the node advertises (`--generic-resource`): "gpu=UUID1", "ssd=3"
            "generic_resources": advertised_text(node.resources),
            "cpu_percent": (meta.cpu_percent if meta else agent.host.cpu_percent),
            "memory_used_bytes": (meta.memory_used_bytes if meta else agent.host.memory_used_bytes),
            "tasks": None
            if view and node.id != agent.node_id
            else sum(
                1 for t in tasks if not t.state.terminal and t.desired_state is TaskState.RUNNING
            ),
            "self": node.id == agent.node_id,
        }

    # ------------------------------------------------------------------------ operations

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        agent = self.agent
        raft = agent.raft.status()
        return {
            "node_id": agent.node_id,
            "name": agent.identity.name,
            "cluster_id": agent.state.cluster_id,
            "member": agent.node_id in agent.state.nodes,
            "addr": agent.identity.addr,
            "raft": {
                "role": raft.role,
                "term": raft.term,
                "leader_id": agent.replica.leader_id,  # a worker's: from its session
                "commit_index": raft.commit_index,
                "applied_index": raft.applied_index,
                "voters": list(raft.voters),
                "learners": list(raft.learners),
            },
            "gossip": {
                "members": len(agent.gossip.core.members()),
                "alive": sum(1 for nid in agent.state.nodes if agent.is_ready(nid)),
                "incarnation": agent.gossip.core.incarnation,
                "awareness": agent.gossip.core.awareness,
                # This node's metadata as gossip spreads it (a fixed size, whatever it runs).
                "meta_bytes": len(me.meta)
                if (me := agent.gossip.core.member(agent.node_id))
                else 0,
                # The cluster key's epoch this node seals its datagrams under (`node rm` raises it).
                "key_epoch": agent.transport.datagram_keys.epoch,
            },
            # A worker's session (`node.worker_sessions`): who serves its view, at which index,
            # and whether a manager served it since the start (False: the view kept on disk);
            # None on a node that reads a Raft replica.
            "session": {
                "manager_id": agent.worker_session.manager_id,
                "index": agent.worker_session.applied,
                "live": agent.worker_session.live,
            }
            if agent.reads_view()
            else None,
            "proxy": agent.proxy.stats(),
            "counters": dict(agent.transport.counters)
            | {f"gossip_{k}": v for k, v in agent.gossip.core.counters.items()}
            | {f"raft_{k}": v for k, v in agent.raft.core.counters.items()}
            # What the nodes' reports say that this node does not believe (a gauge, not a count).
            | {f"observed_{k}": v for k, v in agent.observed().refused.items()},
        }

    async def node_ls(self, args: dict[str, Any]) -> dict[str, Any]:
        fresh = await self.agent.read_barrier()
        nodes = sorted(self.agent.state.nodes.values(), key=lambda n: n.name)
        return {"stale": not fresh, "nodes": [self.node_view(n) for n in nodes]}

    async def node_inspect(self, args: dict[str, Any]) -> dict[str, Any]:
        await self.agent.read_barrier()
        return self.node_view(self._node(_str_arg(args, "node")))

    async def node_update(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self._node(_str_arg(args, "node"))
        availability = None
        if args.get("availability"):
            try:
                availability = Availability(args["availability"])
            except ValueError:
                raise UsageError(
                    f"--availability: expected active, pause or drain, got {args['availability']!r}"
                ) from None
        labels_add = dict(parse_label(text) for text in args.get("label_add") or ())
        labels_rm = tuple(str(k) for k in args.get("label_rm") or ())
        for key in labels_rm:
            if key not in node.labels and key not in labels_add:
                raise UsageError(f"--label-rm: node {node.name} has no label {key!r}")
        labels = {k: v for k, v in node.labels.items() if k not in labels_rm} | labels_add
        weight = _label_chars(labels)
        if weight > MAX_NODE_LABEL_CHARS and weight > _label_chars(node.labels):
            raise UsageError(
                f"--label-add: node {node.name}'s labels would hold {weight:,} characters; the "
                f"limit is {MAX_NODE_LABEL_CHARS:,} (keys and values together)"
            )
        await self._commit(
            UpdateNode(
                node.id, availability=availability, labels_add=labels_add, labels_rm=labels_rm
            )
        )
        return self.node_view(self.agent.state.nodes[node.id])

    async def node_set_role(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self._node(_str_arg(args, "node"))
        role = Role(_str_arg(args, "role"))
        if node.role is role:
            return self.node_view(node)  # nothing to do (the key comes only with a promotion)
        if role is Role.WORKER and node.role is Role.MANAGER:
            managers = [n for n in self.agent.state.managers() if n.id != node.id]
            if not managers:
                raise UsageError(f"cannot demote {node.name}: it is the last manager")
            await self._commit_without_manager(node, UpdateNode(node.id, role=Role.WORKER))
            return self.node_view(self.agent.state.nodes[node.id])
        version = self.agent.transport.peer_protocols.get(node.id)
        if role is Role.MANAGER and cannot_apply_the_log(version, self.agent.state.once_applied):
            # A manager receives the Raft log, and this one's release cannot apply it (the
            # voter policy would leave it out of the group: a manager in name only).
            raise UsageError(
                f"cannot promote {node.name}: it runs an older release (protocol {version}), "
                "which cannot apply this cluster's log; upgrade it first"
            )
        # A manager's record carries the managers' key sealed to it (`security.keyring`), so only
        # a manager can promote; demotion drops the key from the record.
        sealed_key = (
            self.agent.keyring.seal_manager_key_to(node.id, node.public_key)
            if role is Role.MANAGER
            else None
        )
        await self._commit(UpdateNode(node.id, role=role, sealed_manager_key=sealed_key))
        return self.node_view(self.agent.state.nodes[node.id])

    async def node_rm(self, args: dict[str, Any]) -> dict[str, Any]:
        node = self._node(_str_arg(args, "node"))
        force = bool(args.get("force"))
        if node.id == self.agent.node_id:
            raise UsageError("cannot remove the node you are talking to; use `swarmlet leave`")
        if self.agent.is_ready(node.id) and not force:
            raise UsageError(
                f"node {node.name} is not down; stop it first (`swarmlet leave` on it) "
                "or use --force"
            )
        if node.role is Role.MANAGER and not force:
            raise UsageError(f"node {node.name} is a manager; demote it first or use --force")
        # The removed node holds the cluster key: a new one comes with the removal, in one
        # command, sealed to every other member (`security.keyring`). The state refuses it if a
        # member joined or left since this replica was read; it is then sealed again.
        # A manager also holds the managers' key: a new one comes in the same command
        # (`security.managers_key_rotation`).
        error = ""
        for _ in range(_REMOVE_ATTEMPTS):
            await self.agent.read_barrier()
            state = self.agent.state
            if node.id not in state.nodes:
                raise UsageError(f"no such node: {node.id} (removed meanwhile)")
            rotation = rotate_cluster_key(state, without=node.id)
            commands: list[Command] = [RemoveNode(node.id, removed_at=time.time()), rotation]
            if state.nodes[node.id].role is Role.MANAGER:
                commands.append(self._managers_key_rotation(without=node.id))
            result = await self.agent.write(Batch(tuple(commands)))
            if result.ok:
                return {"removed": node.id, "cluster_key_epoch": rotation.epoch}
            error = result.error
        raise UsageError(error)

    async def _commit_without_manager(self, node: Node, change: Command) -> None:
        """Commit `change`, which takes `node` out of the managers, with a new managers' key in
        one `Batch`; built again if the state refuses it (the managers, secrets or credentials
        changed since this replica was read)."""
        error = ""
        for _ in range(_REMOVE_ATTEMPTS):
            await self.agent.read_barrier()
            current = self.agent.state.nodes.get(node.id)
            if current is None:
                raise UsageError(f"no such node: {node.id} (removed meanwhile)")
            if current.role is not Role.MANAGER:
                return  # demoted meanwhile, and the key rotated with it
            rotation = self._managers_key_rotation(without=node.id)
            result = await self.agent.write(Batch((change, rotation)))
            if result.ok:
                return
            error = result.error
        raise UsageError(error)

    def _managers_key_rotation(self, *, without: str) -> RotateManagersKey:
        state = self.agent.state
        return managers_key_rotation.rotation(
            state,
            self.agent.keyring.require_managers(),
            managers=[n.id for n in state.managers() if n.id != without],
        )

    async def backup(self, args: dict[str, Any]) -> dict[str, Any]:
        """The replicated state at a linearizable point (after a read barrier), for `swarmlet
        backup`, which seals it with the keys it reads from this manager's data dir. Managers
        only: the state holds what only managers may see (sealed tokens and secrets)."""
        self.agent.keyring.require_managers()
        if not await self.agent.read_barrier():
            raise NoLeaderError(
                "no leader answered: a backup needs the committed state (check `swarmlet node ls`)"
            )
        state = self.agent.state
        return {
            "cluster_id": state.cluster_id,
            "index": self.agent.raft.applied,
            "state": state.snapshot(),
        }

    async def join_token(self, args: dict[str, Any]) -> dict[str, Any]:
        role = Role(_str_arg(args, "role"))
        keyring = self.agent.keyring  # the tokens are sealed from workers: managers only
        if args.get("rotate"):
            token = str(crypto.JoinToken.new(self.agent.keys))
            sealed = keyring.require_managers().seal_token(role.value, token)
            await self._commit(RotateToken(role, sealed))
        else:
            await self.agent.read_barrier()
        token = keyring.join_token(role)
        state = self.agent.state
        leader = state.nodes.get(self.agent.raft.leader_id or "")
        addr = leader.addr if leader is not None else self.agent.identity.addr
        return {"role": role.value, "token": token, "addr": addr}

    async def leave(self, args: dict[str, Any]) -> dict[str, Any]:
        agent = self.agent
        force = bool(args.get("force"))
        voters = agent.raft.core.conf.voters
        if (
            agent.node_id in voters
            and len(voters) <= 2
            and len(agent.state.managers()) > 1
            and not force
        ):
            raise UsageError(
                "leaving would cost the managers their quorum; demote this node first "
                "or use --force"
            )
        await agent.leave()
        return {"left": agent.node_id}

    async def events(self, args: dict[str, Any], emit: Emit) -> None:
        since = float(args.get("since") or time.time())
        types = set(args.get("types") or ())
        if args.get("no_follow"):
            for event in self.agent.events.since(since):
                if not types or event.type in types:
                    await emit(event.to_dict())
            return
        async for event in self.agent.events.follow(since):
            if not types or event.type in types:
                await emit(event.to_dict())

    # ------------------------------------------------------------------------ tables

    def handlers(self) -> dict[str, Handler]:
        writes = {
            "node.update": self.node_update,
            "node.role": self.node_set_role,
            "node.rm": self.node_rm,
        }
        return managers_only(self.agent, writes) | {
            "status": self.status,
            "node.ls": self.node_ls,
            "node.inspect": self.node_inspect,
            "join-token": self.join_token,  # the tokens open on managers only (`keyring`)
            "backup": self.backup,
            "leave": self.leave,  # gossip, not a write: a worker leaves too
        }

    def streams(self) -> dict[str, StreamHandler]:
        return {"events": self.events}
