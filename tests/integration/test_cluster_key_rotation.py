"""`node rm` replaces the cluster key (issue #15): the removed node held it, and it seals gossip.

A real cluster, three managers and a worker. The worker is removed with `node rm --force` and its
agent keeps running and gossiping, as a removed agent does. After the removal every remaining
member sends under the new epoch; the removed agent stays at the old one. The attacker (this
test process, with a copy of the removed worker's data dir, from its own loopback address, as in
`test_malicious_worker`) can no longer read what the members send: a manager's answer to a ping
(made with a manager's credentials, the control) opens under the new key and not under the key
the worker holds. And what the removed node sends no longer opens anywhere once the grace period
is over: its own agent's datagrams and the attacker's are dropped and counted as of a stale
epoch; sealed under a key of its own for the new epoch number, as invalid. The managers keep
gossiping among themselves: leader, terms and members are what they were, and writes commit.
A node that joins afterwards gets the new key with its record and gossips with them.

The cost of a rotation is measured as the time from `node rm` being run to the last remaining
member sending under the new epoch (from each agent's log line, wall clock, one machine), and
printed: a figure, not a limit.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import trio

from swarmlet import crypto
from swarmlet.errors import RemoteProtocolError
from swarmlet.gossip.driver import GossipDatagram
from swarmlet.gossip.messages import Ack, Ping
from swarmlet.security.datadir import DataDir
from swarmlet.security.keyring import read_cluster_epoch_key
from swarmlet.wire import codec as wire
from swarmlet.wire.datagram_keys import GRACE_S, DatagramKeys
from swarmlet.wire.transport import MAX_DATAGRAM_BYTES, DatagramAuth
from tests.integration.cluster import AgentHandle, LocalCluster, local_cluster, run_cli, wait_for
from tests.integration.test_malicious_worker import (
    ATTACKER_HOST,
    CUT_WAIT_S,
    TEST_TIMEOUT_S,
    Scene,
    counters,
    off_loop,
    picture,
    start_scene,
)

pytestmark = pytest.mark.integration


class Speaker:
    """Gossip datagrams with the keys in one node's data dir as they are now (its newest epoch
    of the cluster key, its identity key), from the attacker's address."""

    def __init__(self, data_dir: Path, node_id: str) -> None:
        datadir = DataDir(data_dir)
        epoch, master = read_cluster_epoch_key(datadir)
        self.node_id = node_id
        self.epoch = epoch
        self.message_key = crypto.ClusterKeys(master).message_key
        self.keys = DatagramKeys(epoch, self.message_key)
        self.auth = DatagramAuth(node_id, datadir.signing_key(), key_of=lambda n: None)

    def datagram(self, *msgs: object, keys: DatagramKeys | None = None) -> bytes:
        body = self.auth.envelope(wire.encode(GossipDatagram(tuple(msgs))))  # type: ignore[arg-type]
        return (keys or self.keys).seal(body)

    def opened(self, data: bytes) -> tuple[object, ...] | None:
        """The messages of a datagram, if it opens under this node's keys."""
        body = self.keys.open(data, time.monotonic())
        if isinstance(body, str):
            return None
        try:
            msg = wire.decode(body[1 + body[0] + crypto.SIGNATURE_BYTES :])
        except (RemoteProtocolError, IndexError):
            return None
        return tuple(msg.msgs) if isinstance(msg, GossipDatagram) else ()

    async def send(self, agent: AgentHandle, datagrams: list[bytes]) -> None:
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((ATTACKER_HOST, 0))
            for data in datagrams:
                await sock.sendto(data, (agent.host, agent.port))

    async def answer_to_ping(self, agent: AgentHandle, agent_id: str) -> bytes | None:
        """The raw datagram `agent` answers a ping from this node with (None if none came)."""
        seq_no = random.randrange(1 << 30)
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind((ATTACKER_HOST, 0))
            await sock.sendto(self.datagram(Ping(seq_no, agent_id)), (agent.host, agent.port))
            with trio.move_on_after(CUT_WAIT_S):
                while True:
                    data = await sock.recv(MAX_DATAGRAM_BYTES + 1)
                    if Ack(seq_no) in (self.opened(data) or ()):
                        return data
        return None


def key_epoch(cluster: LocalCluster, agent: AgentHandle) -> int:
    epoch: int = cluster.status(agent)["gossip"]["key_epoch"]
    return epoch


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*gossip is sealed under epoch 1")


def switched_at(agent: AgentHandle) -> float | None:
    """When `agent` started sending under epoch 1 (its log line; wall clock)."""
    for line in (agent.data_dir / "agent.log").read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if match:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def grown(cluster: LocalCluster, agent: AgentHandle, before: Counter[str], name: str) -> int:
    """How much `agent` has counted of `name` since `before` (0 while nothing)."""
    return counters(cluster, agent)[name] - before[name]


async def test_node_rm_replaces_the_cluster_key_and_the_removed_agent_is_shut_out(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        with local_cluster(tmp_path) as cluster:
            scene: Scene = await off_loop(start_scene, cluster)
            worker, w = scene.worker, scene.worker_id
            everyone = [*scene.managers, worker]
            assert [await off_loop(key_epoch, cluster, a) for a in everyone] == [0] * 4
            before_picture = await off_loop(picture, scene)
            # The removed node's picture entry goes; nothing else may change.
            kept_nodes = [n for n in before_picture["nodes"] if n[0] != w]
            attacker = Speaker(worker.data_dir, w)
            assert attacker.epoch == 0
            # From a follower: the removal and the new key are forwarded to the leader.
            via = await off_loop(scene.follower)

            started = time.time()
            await off_loop(
                run_cli, "node", "rm", "--force", f"n{worker.index}", data_dir=via.data_dir
            )
            removed_at = time.monotonic()
            for m in scene.managers:
                await off_loop(
                    wait_for, f"n{m.index} to send under epoch 1", lambda m=m: key_epoch(cluster, m)
                )
            switched = [switched_at(m) for m in scene.managers]
            assert None not in switched
            cost = max(s for s in switched if s is not None) - started
            print(f"\nrotation: `node rm` to every member sending under epoch 1: {cost:.3f} s")
            before = {m.index: await off_loop(counters, cluster, m) for m in scene.managers}

            # The removed agent keeps running, and gets no new key.
            assert await off_loop(key_epoch, cluster, worker) == 0
            assert Speaker(worker.data_dir, w).epoch == 0
            worker_applied = (await off_loop(cluster.status, worker))["raft"]["applied_index"]

            # It cannot read what the members send: a manager's answer (asked with a manager's
            # credentials, which hold the new key) opens for them and not with its key.
            control_agent = scene.follower()
            control = Speaker(control_agent.data_dir, scene.manager_ids[control_agent.index])
            assert control.epoch == 1
            for m in scene.managers:
                if m is control_agent:
                    continue
                answer = await control.answer_to_ping(m, scene.manager_ids[m.index])
                assert answer is not None, f"n{m.index} did not answer the control"
                assert attacker.opened(answer) is None
                assert attacker.keys.open(answer, time.monotonic()) == "unknown_epoch"
                with pytest.raises(RemoteProtocolError):  # nor with the key as it is on disk
                    crypto.Sealer(attacker.message_key).open(answer, crypto.AAD_GOSSIP)

            # Past the grace period, what it sends no longer opens anywhere.
            await trio.sleep(max(0.0, removed_at + GRACE_S + 1.0 - time.monotonic()))
            guessed = DatagramKeys(0, crypto.new_key())
            guessed.install(1, crypto.ClusterKeys(crypto.new_key()).message_key, 0.0)
            for m in scene.managers:
                seen = await off_loop(counters, cluster, m)
                ping = Ping(1, scene.manager_ids[m.index])
                await attacker.send(
                    m, [attacker.datagram(ping), attacker.datagram(ping, keys=guessed)]
                )
                for name in ("dropped_datagram_stale_epoch", "dropped_datagram_invalid"):
                    await off_loop(
                        wait_for,
                        f"n{m.index} to count {name}",
                        functools.partial(grown, cluster, m, seen, name),
                    )
            # The real removed agent's own datagrams since the rotation: refused for their
            # sender during the grace period, for their epoch after it (it probes the managers,
            # then gossips their failure to them until it forgets them). Ours: one stale each.
            refused_theirs = {}
            for m in scene.managers:
                now = await off_loop(counters, cluster, m)
                refused_theirs[m.index] = {
                    name: now[name]
                    - before[m.index][name]
                    - (name == "dropped_datagram_stale_epoch")
                    for name in ("dropped_datagram_unknown_sender", "dropped_datagram_stale_epoch")
                }
            print(f"the removed agent's datagrams refused since the rotation: {refused_theirs}")
            for index, refused in refused_theirs.items():
                assert sum(refused.values()) > 0, f"n{index} heard nothing of the removed agent"

            # The members keep gossiping: none refuses another's datagrams, all are ready,
            # leader, terms and roles are unchanged, and writes commit.
            after = await off_loop(picture, scene)
            assert after["raft"] == before_picture["raft"]
            assert after["nodes"] == kept_nodes
            for m in scene.managers:
                now = await off_loop(counters, cluster, m)
                assert now["datagrams_in"] > before[m.index]["datagrams_in"]
                status = await off_loop(cluster.status, m)
                assert status["gossip"]["alive"] == len(scene.managers)
                assert status["gossip"]["key_epoch"] == 1
            label = functools.partial(run_cli, "node", "update", "--label-add", "after=1", "n1")
            await off_loop(label, data_dir=scene.follower().data_dir)
            # The removed agent no longer receives the log: every write since is beyond it.
            leader_raft = (await off_loop(cluster.status, scene.follower()))["raft"]
            worker_raft = (await off_loop(cluster.status, worker))["raft"]
            assert worker_raft["applied_index"] == worker_applied < leader_raft["commit_index"]

            # A node admitted after the rotation brings the current key in its record: it
            # sends under epoch 1 and every manager sees it ready (its gossip opens).
            newcomer = await off_loop(cluster.join, "worker")
            await off_loop(
                wait_for, "the newcomer to send under epoch 1", lambda: key_epoch(cluster, newcomer)
            )
            newcomer_id = await off_loop(cluster.node_id, newcomer)
            for m in scene.managers:
                await off_loop(
                    wait_for,
                    f"n{m.index} to see the newcomer ready",
                    lambda m=m: any(
                        n["id"] == newcomer_id and n["status"] == "ready"
                        for n in cluster.node_ls(m)
                    ),
                )
