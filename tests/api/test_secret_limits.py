"""api.secrets: what one secret or config, and all of them together, may weigh. The cluster's
state reaches a new or lagging manager as one Raft snapshot in one frame of at most 64 MiB: 70
configs of Swarm's largest size made a state no manager could receive (review), so a create that
would bring all of them over MAX_SECRETS_TOTAL_BYTES is refused before it is proposed, with an
error that says why and what to do."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from swarmlet.api.secrets import (
    MAX_CONFIG_BYTES,
    MAX_SECRETS_TOTAL_BYTES,
    secret_command,
)
from swarmlet.api.stacks import StackControl
from swarmlet.errors import UsageError
from swarmlet.state.commands import CreateSecret
from swarmlet.state.machine import ClusterState
from swarmlet.state.model import Secret


def cluster_with_configs(total: int) -> Any:
    state = ClusterState()
    n = 0
    while total > 0:
        size = min(total, MAX_CONFIG_BYTES)
        state.secrets[f"c{n}"] = Secret(f"c{n}", f"cfg{n}", bytes(size), is_config=True)
        total -= size
        n += 1
    return SimpleNamespace(state=state, keyring=None)


def test_one_config_over_its_own_limit_is_refused() -> None:
    with pytest.raises(UsageError, match="the limit is 1000 KB"):
        secret_command(
            cluster_with_configs(0), "big", bytes(MAX_CONFIG_BYTES + 1), {}, is_config=True
        )


def test_a_config_over_the_total_of_all_is_refused_and_one_that_fits_is_not() -> None:
    cluster = cluster_with_configs(MAX_SECRETS_TOTAL_BYTES - 1000)
    command = secret_command(cluster, "fits", bytes(1000), {}, is_config=True)
    assert isinstance(command, CreateSecret)
    with pytest.raises(UsageError) as refused:
        secret_command(cluster, "one-too-many", bytes(1001), {}, is_config=True)
    message = str(refused.value)
    assert "'one-too-many'" in message and "32 MiB" in message and "config rm" in message


async def test_the_configs_of_one_stack_deploy_count_together() -> None:
    # Each checked against the committed state alone, 16 configs of 1000 KB in one stack deploy
    # took a cluster at 31 MiB to 46.6 MiB (review): what the same write creates counts too.
    cluster = cluster_with_configs(MAX_SECRETS_TOTAL_BYTES - 3 * MAX_CONFIG_BYTES // 2)

    async def read_barrier() -> bool:
        return True

    cluster.read_barrier = read_barrier
    one = {"data": bytes(MAX_CONFIG_BYTES), "is_config": True}
    args = {"name": "s", "secrets": [{"name": "a", **one}, {"name": "b", **one}]}
    with pytest.raises(UsageError, match=r"config 'b' .* the limit for all of them together"):
        await StackControl(cluster).deploy(args)
