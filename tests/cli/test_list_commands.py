"""The list and inspect commands against a fake agent: `-q` prints IDs as docker does,
`--filter` selects with docker's semantics, `--format` renders docker's fields (and keeps
swarmlet's table and JSON), `inspect --format`, `--detach=false` and `stack deploy -c -`."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from swarmlet.cli.common import ExitStatus
from swarmlet.cli.main import main
from tests.cli.fake_agent import NODE, RESULTS, SERVICE, TASK, fake_agent

NODES = [
    NODE,
    {
        **NODE,
        "id": "w2id0000000000000000",
        "hostname": "worker-2",
        "role": "worker",
        "leader": False,
        "raft": "none",
        "labels": {"zone": "b", "ssd": "true"},
        "self": False,
    },
    {
        **NODE,
        "id": "w3id0000000000000000",
        "hostname": "worker-3",
        "role": "worker",
        "leader": False,
        "raft": "none",
        "labels": {"zone": "a"},
        "self": False,
        "status": "down",
    },
]
API = {
    **SERVICE,
    "id": "apiid00000000000000",
    "name": "api",
    "mode": "global",
    "image": "swarmlet/api:2@sha256:" + "0" * 64,
    "replicas_desired": 3,
    "replicas_running": 1,
    "ports": [],
}
TASKS = [
    TASK,
    {
        **TASK,
        "id": "t2id000000000000000000000",
        "name": "web.2",
        "node": "w2id0000000000000000",
        "node_name": "worker-2",
        "desired_state": "shutdown",
        "state": "failed",
        "error": "task: non-zero exit (137): killed by the OOM killer, twice",
    },
]
SECRETS = [
    {
        "id": "s1id00000000000000000",
        "name": "db_password",
        "labels": {"team": "core"},
        "created_at": 1_700_000_000.0,
        "size_bytes": 6,
        "services": ["web"],
    },
    {
        "id": "s2id00000000000000000",
        "name": "api_key",
        "labels": {},
        "created_at": 1_700_000_000.0,
        "size_bytes": 9,
        "services": [],
    },
]
MORE = {
    **RESULTS,
    "node.ls": {"nodes": NODES, "stale": False},
    "service.ls": {"services": [SERVICE, API]},
    "service.ps": {"tasks": TASKS},
    "service.inspect": {
        **SERVICE,
        "spec": {"name": "web", "image": "swarmlet/web:1", "labels": {"tier": "front"}},
    },
    "node.inspect": {**NODE},
    "secret.ls": SECRETS,
    "secret.inspect": SECRETS[0],
    "stack.ls": {"stacks": [{"name": "web", "services": 2}, {"name": "monitoring", "services": 5}]},
    "stack.deploy": {"created": ["web_web"], "updated": [], "removed": []},
    "service.scale": {"scaled": {"web": 2}},
}


def run(
    tmp_path: Path, argv: list[str], results: dict[str, Any] = MORE
) -> tuple[ExitStatus, str, list[dict[str, Any]]]:
    data_dir = Path(tempfile.mkdtemp(dir=tmp_path))  # a socket of its own for each command
    out = io.StringIO()
    with fake_agent(data_dir, results) as requests:
        status = main([*argv, "--data-dir", str(data_dir)], Console(file=out, width=200))
    return status, out.getvalue(), requests


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # node IDs are whole, service IDs docker's 12 characters, task IDs whole
        (
            ["node", "ls", "-q"],
            "uficacalf7fm2zsuczba\nw2id0000000000000000\nw3id0000000000000000\n",
        ),
        (["service", "ls", "-q"], "kumeeuaxer5u\napiid0000000\n"),
        (["service", "ps", "-q", "web"], "mochy2kzkj31g6olcj0lp87jk\nt2id000000000000000000000\n"),
        (["stack", "services", "-q", "web"], "kumeeuaxer5u\napiid0000000\n"),
        (["stack", "ps", "-q", "web"], "mochy2kzkj31g6olcj0lp87jk\nt2id000000000000000000000\n"),
        (["secret", "ls", "-q"], "s1id00000000000000000\ns2id00000000000000000\n"),
        (["config", "ls", "--quiet"], "s1id00000000000000000\ns2id00000000000000000\n"),
        (["stack", "ls", "-q"], "web\nmonitoring\n"),
        # a template wins over -q, as in docker
        (["service", "ls", "-q", "--format", "{{.Name}}"], "web\napi\n"),
    ],
)
def test_quiet_prints_ids_one_a_line(tmp_path: Path, argv: list[str], expected: str) -> None:
    status, out, _ = run(tmp_path, argv)
    assert (status, out) == (ExitStatus.OK, expected)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "ls", "-f", "role=worker"], ["worker-2", "worker-3"]),
        (["node", "ls", "-f", "role=manager"], ["c1"]),
        (["node", "ls", "-f", "name=worker"], ["worker-2", "worker-3"]),
        (["node", "ls", "-f", "name=c1", "-f", "name=worker-3"], ["c1", "worker-3"]),  # any of
        (["node", "ls", "-f", "name=worker", "-f", "label=zone=a"], ["worker-3"]),  # and
        (["node", "ls", "-f", "label=zone=b", "-f", "label=ssd"], ["worker-2"]),  # all labels
        (["node", "ls", "-f", "label=zone=a", "-f", "label=ssd"], []),
        (["node", "ls", "-f", "node.label=zone"], ["c1", "worker-2", "worker-3"]),
        (["node", "ls", "-f", "id=w3"], ["worker-3"]),
        (["node", "ls", "-f", "membership=accepted"], ["c1", "worker-2", "worker-3"]),
        (["node", "ls", "-f", "membership=pending"], []),
        (["service", "ls", "-f", "mode=global"], ["api"]),
        (["service", "ls", "-f", "name=we"], ["web"]),
        (["service", "ls", "-f", "id=apiid"], ["api"]),
        (["service", "ps", "web", "-f", "desired-state=running"], ["web.1"]),
        (["service", "ps", "web", "-f", "node=worker-2"], ["web.2"]),
        (["service", "ps", "web", "-f", "node=uficac"], ["web.1"]),
        (["service", "ps", "web", "-f", "name=web.2"], ["web.2"]),
        (["service", "ps", "web", "-f", "id=mochy"], ["web.1"]),
        (["stack", "ps", "web", "-f", "desired-state=shutdown"], ["web.2"]),
        (["stack", "services", "web", "-f", "mode=replicated"], ["web"]),
        (["secret", "ls", "-f", "name=db"], ["db_password"]),
        (["secret", "ls", "-f", "label=team=core"], ["db_password"]),
        (["config", "ls", "-f", "id=s2"], ["api_key"]),
    ],
)
def test_filters_select_as_dockers_do(tmp_path: Path, argv: list[str], expected: list[str]) -> None:
    status, out, _ = run(
        tmp_path,
        [*argv, "--format", "{{.Name}}"]
        if argv[0] != "node"
        else [*argv, "--format", "{{.Hostname}}"],
    )
    assert status is ExitStatus.OK
    assert out.split() == expected


def test_a_label_filter_reads_each_services_labels(tmp_path: Path) -> None:
    status, out, requests = run(tmp_path, ["service", "ls", "-f", "label=tier=front", "-q"])
    # The fake answers every inspect with web's spec, labelled tier=front.
    assert (status, out) == (ExitStatus.OK, "kumeeuaxer5u\napiid0000000\n")
    assert [r["op"] for r in requests] == ["service.ls", "service.inspect", "service.inspect"]
    status, out, _ = run(tmp_path, ["service", "ls", "-f", "label=tier=back", "--format", "json"])
    assert (status, json.loads(out)) == (ExitStatus.OK, [])


def test_without_a_label_filter_services_are_listed_in_one_request(tmp_path: Path) -> None:
    _, out, requests = run(tmp_path, ["service", "ls", "--format", "json"])
    assert [r["op"] for r in requests] == ["service.ls"]
    assert json.loads(out) == [SERVICE, API]  # swarmlet's documented JSON, unchanged


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["service", "ls", "--format", "{{.Name}} {{.Replicas}}"], "web 2/2\napi 1/3\n"),
        (
            ["service", "ls", "--format", "table {{.Name}}\\t{{.Image}}\\t{{.Ports}}"],
            "NAME      IMAGE            PORTS\n"
            "web       swarmlet/web:1   *:18080->80/tcp\n"
            "api       swarmlet/api:2   \n",
        ),
        (
            ["service", "ls", "--format", "{{json .}}", "-f", "name=web"],
            '{"ID":"kumeeuaxer5u","Image":"swarmlet/web:1","Mode":"replicated","Name":"web",'
            '"Ports":"*:18080->80/tcp","Replicas":"2/2"}\n',
        ),
        (
            ["service", "ls", "--format", "{{.ID}}\t{{.Mode}}"],
            "kumeeuaxer5u\treplicated\napiid0000000\tglobal\n",
        ),
        (
            [
                "node",
                "ls",
                "--format",
                "{{.ID}}{{if .Self}} *{{end}} {{.Hostname}} {{.Status}} "
                "{{.Availability}} {{.ManagerStatus}}|",
            ],
            "uficacalf7fm2zsuczba * c1 Ready Active Leader|\n"
            "w2id0000000000000000 worker-2 Ready Active |\n"
            "w3id0000000000000000 worker-3 Down Active |\n",
        ),
        (
            [
                "service",
                "ps",
                "web",
                "--format",
                "{{.ID}} {{.Name}} {{.Image}} {{.Node}} {{.DesiredState}} {{.Error}}|",
            ],
            "mochy2kzkj31 web.1 swarmlet/web:1 c1 Running |\n"
            "t2id00000000 web.2 swarmlet/web:1 worker-2 Shutdown "
            '"task: non-zero exit (137): ki…"|\n',
        ),
        (
            [
                "service",
                "ps",
                "web",
                "--no-trunc",
                "-f",
                "name=web.2",
                "--format",
                "{{.ID}} {{.Error}}",
            ],
            "t2id000000000000000000000 "
            '"task: non-zero exit (137): killed by the OOM killer, twice"\n',
        ),
        (["stack", "ls", "--format", "{{.Name}}: {{.Services}}"], "web: 2\nmonitoring: 5\n"),
        (
            ["stack", "ls", "--format", "table {{.Name}}\\t{{.Services}}"],
            "NAME         SERVICES\nweb          2\nmonitoring   5\n",
        ),
        (
            ["secret", "ls", "--format", '{{.Name}} {{.Label "team"}} {{.Labels}}|{{.Driver}}|'],
            "db_password core team=core||\napi_key  ||\n",
        ),
        (
            ["config", "ls", "--format", "table {{.ID}}\\t{{.Name}}", "-f", "name=api"],
            "ID                      NAME\ns2id00000000000000000   api_key\n",
        ),
    ],
)
def test_templates_render_dockers_fields(tmp_path: Path, argv: list[str], expected: str) -> None:
    status, out, _ = run(tmp_path, argv)
    assert (status, out) == (ExitStatus.OK, expected)


def test_task_states_read_as_dockers_current_state(tmp_path: Path) -> None:
    _, out, _ = run(tmp_path, ["service", "ps", "web", "--format", "{{.CurrentState}}"])
    first, second = out.splitlines()
    assert first.startswith("Running ") and first.endswith(" ago")
    assert second.startswith("Failed ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["service", "ls", "--format", "{{.Nope}}"],
            "can't evaluate field Nope in type *formatter.serviceContext",
        ),
        (
            ["config", "ls", "--format", "{{.Driver}}"],
            "can't evaluate field Driver in type *config.configContext",
        ),
        (["node", "ls", "--format", '{{define "x"}}{{end}}'], '"define" is not supported'),
        (["stack", "ls", "--format", "{{.Name"], "unclosed action"),
    ],
)
def test_a_bad_template_is_a_usage_error(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(tmp_path, argv)
    assert (status, out) == (ExitStatus.USAGE, "")
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "inspect", "--format", "json", "c1"], json.dumps([NODE], indent=2) + "\n"),
        (["node", "inspect", "-f", "{{.hostname}} {{.labels.zone}}", "c1", "c1"], "c1 a\nc1 a\n"),
        (
            ["service", "inspect", "-f", "{{.spec.image}}\t{{json .spec.labels}}", "web"],
            'swarmlet/web:1\t{"tier":"front"}\n',
        ),
        (
            [
                "secret",
                "inspect",
                "--format",
                "{{.name}}{{range $k, $v := .labels}} {{$k}}={{$v}}{{end}}",
                "db_password",
            ],
            "db_password team=core\n",
        ),
        (["config", "inspect", "-f", "{{.missing}}", "x"], "<no value>\n"),
    ],
)
def test_inspect_takes_json_or_a_template(tmp_path: Path, argv: list[str], expected: str) -> None:
    status, out, _ = run(tmp_path, argv)
    assert (status, out) == (ExitStatus.OK, expected)


def test_the_default_tables_are_swarmlets_own(tmp_path: Path) -> None:
    _, out, _ = run(tmp_path, ["service", "ls", "-f", "name=web"])
    assert out.splitlines()[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    _, out, _ = run(tmp_path, ["service", "ps", "--no-trunc", "-f", "name=web.1", "web"])
    assert out.splitlines()[1].startswith("mochy2kzkj31g6olcj0lp87jk  web.1")


def test_detach_false_waits_and_detach_returns_at_once(tmp_path: Path) -> None:
    status, out, requests = run(tmp_path, ["service", "scale", "--detach", "web=2"])
    assert (status, [r["op"] for r in requests]) == (ExitStatus.OK, ["service.scale"])
    status, out, requests = run(tmp_path, ["service", "scale", "--detach=false", "web=2"])
    assert status is ExitStatus.OK
    assert [r["op"] for r in requests][:2] == ["service.scale", "service.ls"]
    assert "web: 2/2 running" in out


STACK = """\
version: "3.8"
services:
  web:
    image: swarmlet/web:1
    env_file: web.env
"""


@pytest.mark.parametrize("verb", ["deploy", "up"])
def test_a_stack_deploys_from_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    from swarmlet.state.model import ServiceSpec
    from swarmlet.wire import codec as wire

    work = tmp_path / "work"
    work.mkdir()
    (work / "web.env").write_text("GREETING=hello\n")  # relative to the working directory
    monkeypatch.chdir(work)
    monkeypatch.setattr("sys.stdin", io.StringIO(STACK))
    status, out, requests = run(tmp_path, ["stack", verb, "-c", "-", "--detach=true", "web"])
    assert (status, out) == (ExitStatus.OK, "Creating service web_web\n")
    (request,) = requests
    (spec,) = [wire.decode(s, expect=(ServiceSpec,)) for s in request["args"]["services"]]
    assert isinstance(spec, ServiceSpec)
    assert (spec.name, spec.image, dict(spec.env)) == (
        "web_web",
        "swarmlet/web:1",
        {"GREETING": "hello"},
    )
    assert list(work.iterdir()) == [work / "web.env"]  # nothing left behind


def test_a_stack_from_standard_input_names_it_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.stdin", io.StringIO('version: "3.8"\nservices:\n  web:\n    image: 3\n')
    )
    status, _, requests = run(tmp_path, ["stack", "deploy", "-c", "-", "web"])
    assert (status, requests) == (ExitStatus.ERROR, [])
    assert "error: -: services.web.image: must be a string" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["node", "ps", "-q"], "mochy2kzkj31g6olcj0lp87jk\n"),  # this agent's node: c1
        (["node", "ps", "-q", "self"], "mochy2kzkj31g6olcj0lp87jk\n"),
        (["node", "ps", "-q", "worker-2"], "t2id000000000000000000000\n"),
        (
            ["node", "ps", "-q", "w2id", "c1"],
            "mochy2kzkj31g6olcj0lp87jk\nt2id000000000000000000000\n",
        ),
        (["node", "ps", "worker-3", "-q"], ""),
        (
            [
                "node",
                "ps",
                "--format",
                "{{.Name}} {{.Node}}",
                "-f",
                "desired-state=shutdown",
                "w2id",
            ],
            "web.2 worker-2\n",
        ),
    ],
)
def test_node_ps_lists_the_tasks_of_nodes(tmp_path: Path, argv: list[str], expected: str) -> None:
    status, out, requests = run(tmp_path, argv)
    assert (status, out) == (ExitStatus.OK, expected)
    # every service's tasks: no service named
    assert requests[1] == {"op": "service.ps", "args": {"services": None, "stack": None}}


def test_node_ps_of_an_unknown_node_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, _ = run(tmp_path, ["node", "ps", "nope"])
    assert status is ExitStatus.USAGE
    assert "no such node: nope" in capsys.readouterr().err


def test_self_names_the_node_of_the_agent_asked(tmp_path: Path) -> None:
    status, out, requests = run(tmp_path, ["node", "inspect", "-f", "{{.hostname}}", "self"])
    assert (status, out) == (ExitStatus.OK, "c1\n")
    assert [(r["op"], r["args"].get("node")) for r in requests] == [
        ("node.ls", None),
        ("node.inspect", "uficacalf7fm2zsuczba"),
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["node", "update", "--role", "manager", "worker-2"],
            [("node.role", {"node": "worker-2", "role": "manager"})],
        ),
        (
            ["node", "update", "--role", "worker", "--availability", "drain", "self"],
            [
                ("node.ls", {}),
                (
                    "node.update",
                    {
                        "node": "uficacalf7fm2zsuczba",
                        "availability": "drain",
                        "label_add": [],
                        "label_rm": [],
                    },
                ),
                ("node.role", {"node": "uficacalf7fm2zsuczba", "role": "worker"}),
            ],
        ),
        (
            ["node", "update", "--label-add", "a=b", "c1"],
            [
                (
                    "node.update",
                    {"node": "c1", "availability": None, "label_add": ["a=b"], "label_rm": []},
                )
            ],
        ),
    ],
)
def test_node_update_changes_the_role_too(
    tmp_path: Path, argv: list[str], expected: list[tuple[str, dict[str, Any]]]
) -> None:
    results = {**MORE, "node.role": {**NODE}, "node.update": None}
    status, out, requests = run(tmp_path, argv, results)
    assert (status, out) == (ExitStatus.OK, f"{argv[-1]}\n")
    assert [(r["op"], r["args"]) for r in requests] == expected
