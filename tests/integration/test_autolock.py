"""Encryption at rest and autolock on a real local cluster (issue #18): `init --autolock`, a
service with a distinctive env value and a secret with a distinctive value; no data dir holds
either in clear; a SIGKILLed manager restarts locked (status says so, it does not rejoin) until
`swarmlet unlock`, then catches up; a rotated key unlocks and the old one is refused; autolock
off lets a manager restart unlocked."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from swarmlet.security import at_rest
from tests.integration.cluster import (
    SWARMLET,
    CommandFailed,
    LocalCluster,
    local_cluster,
    run_cli,
    services,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]

ENV_VALUE = "env-value-5e1f0c-autolock"
SECRET_VALUE = "secret-value-9b2d7a-autolock"


def unlock(cluster: LocalCluster, index: int, key: str) -> subprocess.CompletedProcess[str]:
    """`swarmlet unlock` with the key on stdin, as an operator pipes it."""
    return subprocess.run(
        [*SWARMLET, "unlock"],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SWARMLET_DATA_DIR": str(cluster.agents[index].data_dir)},
    )


def status(cluster: LocalCluster, index: int) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        run_cli("status", data_dir=cluster.agents[index].data_dir).stdout
    )
    return result


def files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def unlock_key(cluster: LocalCluster) -> str:
    return run_cli("unlock-key", "-q", data_dir=cluster.agents[0].data_dir).stdout.strip()


def restart_locked(cluster: LocalCluster, index: int) -> None:
    cluster.kill(cluster.agents[index])
    cluster.restart(cluster.agents[index])
    assert status(cluster, index)["locked"] is True


def test_autolocked_cluster_keeps_specs_and_secrets_off_the_disks(tmp_path: Path) -> None:
    with local_cluster(tmp_path / "cluster") as cluster:
        first = cluster.handle(1)
        out = run_cli(
            "init",
            "--autolock",
            "--advertise-addr",
            first.host,
            "--port",
            str(first.port),
            "--publish-addr",
            first.host,
            "--name",
            "n1",
            data_dir=first.data_dir,
        ).stdout
        cluster.agents.append(first)
        cluster.cluster_id = cluster.status(first)["cluster_id"]  # its containers go at the end
        key = unlock_key(cluster)
        assert key.startswith("SWLKEY-1-") and key in out
        cluster.join("manager")
        cluster.join("manager")
        cluster.join("worker")
        d = first.data_dir

        secret_file = tmp_path / "secret-source"
        secret_file.write_text(SECRET_VALUE)
        run_cli("secret", "create", "db_pw", str(secret_file), data_dir=d)
        run_cli(
            "service",
            "create",
            "--name",
            "web",
            "--env",
            f"MARK={ENV_VALUE}",
            "--secret",
            "db_pw",
            "swarmlet/web:1",
            data_dir=d,
            timeout=120,
        )
        wait_for("web on every manager", lambda: all("web" in services(cluster, i) for i in (1, 2)))

        # Each manager seals its data key once it has applied the setting (the worker cannot).
        managers = cluster.agents[:3]
        wait_for(
            "managers' keys sealed", lambda: all(at_rest.is_locked(a.data_dir) for a in managers)
        )
        assert not at_rest.is_locked(cluster.agents[3].data_dir)

        # A manager killed and restarted is locked: it says so and does not rejoin.
        restart_locked(cluster, 2)
        with pytest.raises(CommandFailed, match="this node is locked"):
            run_cli("node", "ls", data_dir=cluster.agents[2].data_dir)

        def n3_on_n1() -> dict[str, Any]:
            return next(n for n in cluster.node_ls(cluster.agents[0]) if n["hostname"] == "n3")

        wait_for("n1 to see n3 down", lambda: n3_on_n1()["status"] == "down", timeout=60)

        # A wrong key is refused and the node stays locked; the right one unlocks it.
        wrong = unlock(cluster, 2, "SWLKEY-1-" + "A" * 52)
        assert wrong.returncode != 0 and "invalid unlock key" in wrong.stderr
        assert status(cluster, 2)["locked"] is True
        assert unlock(cluster, 2, key).returncode == 0
        later = tmp_path / "later"
        later.write_text("later")
        run_cli("secret", "create", "after_unlock", str(later), data_dir=d)

        def n3_secrets() -> list[str]:
            out = run_cli(
                "secret", "ls", "--format", "{{.Name}}", data_dir=cluster.agents[2].data_dir
            )
            return out.stdout.split()

        wait_for("n3 to catch up", lambda: "after_unlock" in n3_secrets(), timeout=60)
        wait_for("n1 to see n3 back", lambda: n3_on_n1()["status"] == "ready", timeout=60)

        # Only managers hold the unlock key; a running node is not locked.
        worker = run_cli("unlock-key", data_dir=cluster.agents[3].data_dir, check=False)
        assert worker.returncode != 0 and "not a manager" in worker.stderr
        assert "not locked" in unlock(cluster, 0, key).stderr

        # Nothing of the spec's env or the secret's value is in clear in any data dir.
        for agent in cluster.agents:
            assert files_holding(agent.data_dir, ENV_VALUE.encode()) == []
            assert files_holding(agent.data_dir, SECRET_VALUE.encode()) == []

        # Rotation: every running manager re-seals; the new key unlocks, the old is refused.
        n2_key_file = at_rest.data_key_path(cluster.agents[1].data_dir)
        sealed_before = n2_key_file.read_bytes()
        new_key = run_cli("unlock-key", "-q", "--rotate", data_dir=d).stdout.strip()
        assert new_key != key and new_key.startswith("SWLKEY-1-")
        wait_for("n2 to re-seal", lambda: n2_key_file.read_bytes() != sealed_before)
        restart_locked(cluster, 1)
        old = unlock(cluster, 1, key)
        assert old.returncode != 0 and "invalid unlock key" in old.stderr
        assert unlock(cluster, 1, new_key).returncode == 0
        wait_for("n2 back", lambda: status(cluster, 1).get("member") is True, timeout=60)

        # Autolock off: a restarted manager starts unlocked, and there is no key to show.
        run_cli("update", "--autolock=false", data_dir=d)
        wait_for("n2's key in clear", lambda: not at_rest.is_locked(cluster.agents[1].data_dir))
        cluster.kill(cluster.agents[1])
        cluster.restart(cluster.agents[1])
        assert "locked" not in status(cluster, 1)
        refused = run_cli("unlock-key", data_dir=d, check=False)
        assert refused.returncode != 0 and "autolock is off" in refused.stderr
