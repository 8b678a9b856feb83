"""The generic resources a node advertises: kept in its data dir by `init/join/agent
--generic-resource`, read back at every start; malformed ones are refused before anything is
written or started."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from swarmlet.cli.common import ExitStatus
from swarmlet.cli.main import main
from swarmlet.errors import UsageError
from swarmlet.node.advertised_resources import FILE_NAME, read_advertised, write_advertised


def test_the_list_is_kept_as_given_and_read_back(tmp_path: Path) -> None:
    assert read_advertised(tmp_path) == ()  # none kept: none advertised
    write_advertised(tmp_path, ["gpu=g1,g2", "ssd=3"])
    assert (tmp_path / FILE_NAME).read_text() == "gpu=g1,g2\nssd=3\n"
    assert read_advertised(tmp_path) == ("gpu=g1,g2", "ssd=3")
    write_advertised(tmp_path, [])  # `agent` replaces the list
    assert read_advertised(tmp_path) == ()


def test_a_hand_edited_file_that_is_malformed_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_text("gpu=g1\ngpu=2\n")
    with pytest.raises(UsageError, match=f"{FILE_NAME}: gpu is given both"):
        read_advertised(tmp_path)


def test_a_malformed_list_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="expected KIND=COUNT"):
        write_advertised(tmp_path, ["gpu"])
    assert not (tmp_path / FILE_NAME).exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--generic-resource", "gpu=g1", "--generic-resource", "gpu=2"],
        ["join", "--token", "SWLT-1-x", "--generic-resource", "gpu=g1,7", "127.0.0.1:1"],
        ["agent", "--generic-resource", "=3"],
    ],
)
def test_the_commands_refuse_a_malformed_advertisement_before_doing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    data_dir = tmp_path / "node"
    status = main([*argv, "--data-dir", str(data_dir)], Console(file=io.StringIO()))
    assert status is ExitStatus.USAGE
    assert "--generic-resource: " in " ".join(capsys.readouterr().err.split())
    assert not data_dir.exists()


def test_agent_keeps_a_new_list_only_for_an_existing_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.joinpath("node").mkdir()
    argv = ["agent", "--generic-resource", "ssd=2", "--data-dir", str(tmp_path / "node")]
    assert main(argv, Console(file=io.StringIO())) is not ExitStatus.OK
    assert not (tmp_path / "node" / FILE_NAME).exists()
