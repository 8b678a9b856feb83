"""Record docker's own rendering of Go templates, as test data for `swarmlet.cli.gotemplate`.

Run by hand (needs the docker CLI and an engine):
`python tests/cli/data/record_docker_templates.py`.
It creates a volume, a network and a container (never started) with known labels, records
`docker inspect` of each beside `docker inspect --format TEMPLATE` for the templates below, and
`docker volume ls --format ...` for list tables; then removes what it created. The output,
`docker_templates.json`, is what `tests/cli/test_gotemplate_docker.py` reads.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

LABEL = "swarmlet-gotemplate-test"
VOLUMES = ("sgt-v", "sgt-volume-with-a-long-name")
NETWORK = "sgt-net"
CONTAINER = "sgt-c"

INSPECT_TEMPLATES = {
    "container": [
        "{{.Name}}",
        "{{.Config.Image}} {{.State.Status}}",
        "{{json .Config.Labels}}",
        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
        '{{index .Config.Labels "color"}}',
        "{{if .State.Running}}up{{else}}down{{end}}",
        "{{if not .State.Running}}stopped{{end}}",
        '{{join .Config.Cmd " "}}',
        '{{upper .Config.Image}} {{lower "ABC"}} {{title "hello world"}}',
        "{{range .Config.Env}}{{println .}}{{end}}",
        "{{.Config.Labels}}",
        "{{pad .Config.Image 2 3}}|{{pad .Config.Domainname 2 3}}|",
        "{{truncate .Id 12}}",
        "{{len .Config.Env}}",
        "{{range .Mounts}}{{.Type}}:{{.Name}}->{{.Destination}} {{end}}",
        "{{.Config.Cmd}}",
        "{{with .Config.Labels.color}}color={{.}}{{end}}"
        "{{with .Config.Domainname}}x{{else}}none{{end}}",
        '{{split "a,b,c" ","}}',
        '{{if eq .State.Status "created"}}new{{else if eq .State.Status "running"}}up{{end}}',
        '{{if eq .State.Status "exited" "created"}}stopped{{end}}',
        "{{json .Config.Cmd}} {{json .State.Running}} {{json .Config.Domainname}}",
        "{{json .Mounts}}",
        "{{.HostConfig.Memory}} {{.State.Pid}} {{.HostConfig.CpuShares}}",
        "{{.Config.Labels.missing}}",
        "{{- .Config.Image -}}  {{- /* a comment */ -}}  !",
        '{{printf "%s-%d" .Config.Image 3}}',
        "{{range $i, $e := .Config.Cmd}}{{$i}}:{{$e}} {{end}}",
        "{{$img := .Config.Image}}{{range .Config.Cmd}}{{$img}}/{{.}} {{end}}",
        "{{range .Config.Cmd}}{{$.Config.Image}} {{end}}",
        '{{.Config.Labels.color | upper}} {{.Config.Image | printf "%q"}}',
        "{{(index .Mounts 0).Destination}}",
        "{{and .State.Running .Config.Image}}|{{or .State.Running .Config.Image}}",
        "{{range .Config.Volumes}}x{{else}}no volumes{{end}}",
        '{{if and (ne .State.Status "running") (gt (len .Config.Env) 1)}}yes{{end}}',
        '{{print "a" "b" 1 2 "c"}}',
        '{{println "a" 1}}',
    ],
    "volume": [
        "{{.Name}} {{.Driver}} {{.Scope}}",
        "{{json .Labels}}",
        "{{.Labels}}",
        '{{index .Labels "color"}}:{{index .Labels "empty"}}:',
        "{{range $k, $v := .Labels}}{{$k}}{{if $v}}={{$v}}{{end}} {{end}}",
    ],
    "network": [
        "{{.Name}} {{.Driver}} {{.Internal}} {{.Attachable}} {{.EnableIPv6}}",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "{{json .Labels}} {{json .Options}}",
        "{{if .Internal}}internal{{else}}external{{end}}",
    ],
}

LIST_TEMPLATES = [
    "table {{.Name}}\\t{{.Driver}}",
    "table {{.Name}}\t{{.Driver}}\t{{.Scope}}",
    "table {{.Driver}}\\t{{.Name}}",
    "table {{.Name | upper}}\\t{{.Driver}}",
    "table {{.Name}}",
    "{{.Name}}\\t{{.Driver}}",
    "{{.Name}}: {{.Driver}}",
    "table {{.Name}}\\t{{.Scope}}\\t{{.Driver}}!",
    'table {{.Name}}\\t{{.Label "color"}}\\t{{.Driver}}',
    'table {{.Name}}\\t{{.Label "com.example.my_team-name"}}|',
    "table {{.Name}}\\t{{index .Name 0}}\\t{{slice .Driver 1 3}}",
]


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


def main() -> None:
    for volume in VOLUMES:
        docker(
            "volume",
            "create",
            "--label",
            LABEL,
            "--label",
            "color=blue",
            "--label",
            "empty=",
            volume,
        )
    docker(
        "network",
        "create",
        "--label",
        LABEL,
        "--label",
        "tier=back",
        "--subnet",
        "10.213.7.0/24",
        "--opt",
        "com.docker.network.bridge.enable_icc=true",
        NETWORK,
    )
    docker(
        "create",
        "--name",
        CONTAINER,
        "--label",
        LABEL,
        "--label",
        "color=blue",
        "--label",
        "com.example.team=core",
        "-e",
        "MODE=test",
        "-e",
        "EMPTY=",
        "-v",
        f"{VOLUMES[0]}:/data",
        "swarmlet/busybox:1",
        "sh",
        "-c",
        "echo hello",
    )
    try:
        objects = {
            "container": CONTAINER,
            "volume": VOLUMES[0],
            "network": NETWORK,
        }
        cases = []
        for kind, templates in INSPECT_TEMPLATES.items():
            (data,) = json.loads(docker(kind, "inspect", objects[kind]))
            for template in templates:
                cases.append(
                    {
                        "kind": kind,
                        "template": template,
                        "docker": docker(kind, "inspect", "--format", template, objects[kind]),
                    }
                )
            objects[kind] = data
        volumes = [json.loads(docker("volume", "inspect", v))[0] for v in VOLUMES]
        lists = [
            {
                "template": template,
                "docker": docker(
                    "volume", "ls", "--filter", f"label={LABEL}", "--format", template
                ),
            }
            for template in LIST_TEMPLATES
        ]
        recorded = {
            "docker_version": docker("version", "--format", "{{.Client.Version}}").strip(),
            "objects": objects,
            "inspect": cases,
            "volumes": sorted(volumes, key=lambda v: v["Name"]),
            "volume_ls": lists,
        }
        out = Path(__file__).with_name("docker_templates.json")
        out.write_text(json.dumps(recorded, indent=1) + "\n")
    finally:
        docker("rm", "-f", CONTAINER)
        docker("network", "rm", NETWORK)
        docker("volume", "rm", *VOLUMES)


if __name__ == "__main__":
    main()
