"""Running an agent process, the top of the composition: logging, signals, the control socket,
and a clean stop.

Here the agent (`node.agent`) meets the control API: the handlers of `swarmlet.api` are built on
the agent, which they see only through their own Protocols (`api.cluster`), and served on the
data dir's Unix socket inside the agent's nursery. Nothing below this module knows both sides.

A locked node (autolock, `security.at_rest`) first serves only `status` and `unlock`
(`node.locked`); the agent is built once the unlock key has opened its data key.

SIGTERM and SIGINT stop the agent cleanly: it hands over Raft leadership if it holds it, tells
gossip it is leaving (the others see a departure, not a failure), and exits after its last write
is durable (Raft persists before it acknowledges, so there is nothing left to flush).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
from collections.abc import Callable

import trio

from swarmlet.api.autolock import AutolockControl
from swarmlet.api.control_socket import serve_control
from swarmlet.api.nodes import Control
from swarmlet.api.secrets import SecretControl
from swarmlet.api.services import ServiceControl
from swarmlet.api.stacks import StackControl
from swarmlet.errors import StorageCorruptError, UsageError
from swarmlet.logs import configure_logging
from swarmlet.node.agent import Agent
from swarmlet.node.config import AgentConfig, parse_metrics_addr
from swarmlet.node.locked import wait_until_unlocked
from swarmlet.security import at_rest
from swarmlet.security.datadir import DataDir

log = logging.getLogger("swarmlet")


async def _main(
    datadir: DataDir, config: AgentConfig | None, on_ready: Callable[[], None] | None
) -> None:
    data_key, unlocked_with = None, None
    if at_rest.is_locked(datadir.path):  # autolock: nothing opens before `swarmlet unlock`
        data_key, unlocked_with = await wait_until_unlocked(datadir)
    agent = Agent(datadir, config, data_key=data_key, unlocked_with=unlocked_with)
    control = Control(agent)
    autolock = AutolockControl(agent)
    services = ServiceControl(agent)
    stacks = StackControl(agent)
    secrets = SecretControl(agent)

    async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_control(
            datadir.socket_path,
            control.handlers()
            | services.handlers()
            | stacks.handlers()
            | secrets.handlers()
            | autolock.handlers(),
            control.streams() | services.streams(),
            task_status=task_status,
        )

    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info(
                        "received %s: leaving the cluster cleanly", signal.Signals(signum).name
                    )
                    agent.stopping.set()
                    return

        nursery.start_soon(on_signals)
        async with trio.open_nursery() as inner:  # exits when agent.run has shut down
            await inner.start(agent.run, serve)
            if on_ready is not None:
                on_ready()
        nursery.cancel_scope.cancel()
    log.info("agent stopped")


def _seconds(name: str) -> float | None:
    """A positive number of seconds from the environment; None (and a warning) otherwise."""
    text = os.environ.get(name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        log.warning("ignoring %s=%r: not a positive number of seconds", name, text)
        return None
    return value


def _whole_number(name: str, *, minimum: int) -> int | None:
    """The environment variable `name` as a whole number >= `minimum`; None if unset or not one
    (with a warning)."""
    text = os.environ.get(name)
    if not text:
        return None
    if text.isascii() and text.isdigit() and int(text) >= minimum:  # "²" is a digit to isdigit
        return int(text)
    log.warning("ignoring %s=%r: not a whole number >= %d", name, text, minimum)
    return None


def config_from_env() -> AgentConfig:
    """Operator overrides of the agent's defaults (documented in README.md):
    SWARMLET_VOTER_GRACE_S  how long a Raft voter may be down before a standby replaces it;
    SWARMLET_PROXY_WORKERS  extra processes serving the routing mesh (0: the agent alone);
    SWARMLET_CERT_LIFETIME_S  how long the node certificates this node issues are valid;
    SWARMLET_METRICS_ADDR  HOST:PORT where Prometheus scrapes the agent (`node.metrics`);
    SWARMLET_SNAPSHOT_EVERY  Raft entries applied before the log may be compacted (etcd's
      --snapshot-count).
    A malformed metrics address is refused (UsageError), not ignored: the operator asked for an
    endpoint, and an agent that silently serves none would look healthy and be unwatched."""
    config = AgentConfig()
    grace = _seconds("SWARMLET_VOTER_GRACE_S")
    if grace is not None:
        config = dataclasses.replace(config, voter_grace_s=grace)
    workers = _whole_number("SWARMLET_PROXY_WORKERS", minimum=0)
    if workers is not None:
        config = dataclasses.replace(config, proxy_workers=workers)
    snapshot_every = _whole_number("SWARMLET_SNAPSHOT_EVERY", minimum=1)
    if snapshot_every is not None:
        config = dataclasses.replace(config, raft_snapshot_every=snapshot_every)
    lifetime = _seconds("SWARMLET_CERT_LIFETIME_S")
    if lifetime is not None:
        config = dataclasses.replace(config, cert_lifetime_s=lifetime)
    metrics = os.environ.get("SWARMLET_METRICS_ADDR")
    if metrics:
        try:
            addr = parse_metrics_addr(metrics)
        except UsageError as exc:
            raise UsageError(f"SWARMLET_METRICS_ADDR: {exc}") from None
        config = dataclasses.replace(config, metrics_addr=addr)
    return config


def run_agent(
    datadir: DataDir,
    config: AgentConfig | None = None,
    *,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run the agent until it stops. Exit status: 0 after a clean stop; 2 if its configuration
    is refused (a malformed or unusable metrics address, a log level or format it cannot take)
    or its data dir was written by a newer release; 3 if its data dir is corrupt."""
    try:
        configure_logging()
    except ValueError as exc:
        log.critical("refusing to start: %s", exc)
        return 2
    try:
        # Before anything opens a file of the data dir: an older format is brought up to date,
        # a newer one refused (issue #18).
        datadir.migrate_format()
        trio.run(_main, datadir, config or config_from_env(), on_ready)
    except StorageCorruptError as exc:
        log.critical("refusing to start: %s", exc)
        return 3
    except UsageError as exc:  # from config_from_env, or a data dir of a newer release
        log.critical("refusing to start: %s", exc)
        return 2
    except BaseExceptionGroup as group:  # from inside the agent's nurseries: the metrics port
        refused, _ = group.split(UsageError)
        if refused is None:
            raise
        log.critical("refusing to start: %s", _first_leaf(refused))
        return 2
    return 0


def _first_leaf(group: BaseExceptionGroup[UsageError]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
