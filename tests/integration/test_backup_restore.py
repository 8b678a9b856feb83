"""Backup and restore (issue #18), as an operator would: back up a running cluster, destroy
every agent, data dir and container, restore on a fresh data dir, and see every service run
again with its secret; the other hosts join the restored cluster again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.cluster import local_cluster, run_cli, services, tasks, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("docker_images")]


def test_backup_destroy_everything_restore_and_rejoin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text("a long enough passphrase\n")
    secret = tmp_path / "db_pw"
    secret.write_text("s3cret-value")
    backup = tmp_path / "cluster.bak"
    with local_cluster(tmp_path / "old") as old:
        old.start(managers=3)
        d = old.agents[0].data_dir
        run_cli("secret", "create", "db_pw", str(secret), data_dir=d)
        for spec in (
            ["--name", "web", "--replicas", "2", "--secret", "db_pw", "swarmlet/web:1"],
            ["--name", "idle", "swarmlet/busybox:1", "sleep", "3600"],
        ):
            run_cli("service", "create", *spec, data_dir=d, timeout=120)
        with monkeypatch.context() as env:
            env.setenv("SWARMLET_BACKUP_PASSPHRASE", "short")
            short = run_cli("backup", str(backup), data_dir=old.agents[2].data_dir, check=False)
        assert short.returncode == 2 and "at least 12 characters" in short.stderr
        assert not backup.exists()
        out = run_cli(
            "backup",
            "--passphrase-file",
            str(passphrase),
            str(backup),
            data_dir=old.agents[1].data_dir,  # any manager: the state is the committed one
        ).stdout
        assert "backed up the state" in out
        assert b"s3cret" not in backup.read_bytes() and b"swarmlet/web" not in backup.read_bytes()
    # Leaving `local_cluster` killed every agent and removed every container; the data dirs go.
    shutil.rmtree(tmp_path / "old")

    with local_cluster(tmp_path / "new") as new:
        fresh = new.handle(1)
        where = ["--advertise-addr", fresh.host, "--port", str(fresh.port)]
        with monkeypatch.context() as env:
            env.setenv("SWARMLET_BACKUP_PASSPHRASE", "not the passphrase at all")
            refused = run_cli(
                "init", "--restore", str(backup), *where, data_dir=fresh.data_dir, check=False
            )
        assert refused.returncode == 2 and "does not open with this passphrase" in refused.stderr
        assert not fresh.data_dir.exists()  # nothing written
        run_cli(
            "init",
            "--restore",
            str(backup),
            "--passphrase-file",
            str(passphrase),
            *where,
            "--publish-addr",
            fresh.host,
            "--name",
            "n1",
            data_dir=fresh.data_dir,
            timeout=120,
        )
        new.agents.append(fresh)
        new.cluster_id = new.status(fresh)["cluster_id"]  # the old one's: its cleanup needs it
        assert [n["hostname"] for n in new.node_ls(fresh)] == ["n1"]  # the old nodes are gone

        def running() -> tuple[int, int]:
            listed = services(new)
            return listed["web"]["replicas_running"], listed["idle"]["replicas_running"]

        wait_for("web and idle to run again", lambda: running() == (2, 1), timeout=120)
        task = next(t for t in tasks(new, "web") if t["state"] == "running")
        value = subprocess.run(
            ["docker", "exec", task["container_id"], "cat", "/run/secrets/db_pw"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert value == "s3cret-value"  # the secret, sealed in the backup, opens
        new.join("manager")
        new.join("worker")
        wait_for(
            "three ready nodes",
            lambda: [n["status"] for n in new.node_ls(fresh)] == ["ready"] * 3,
        )
