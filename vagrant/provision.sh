#!/usr/bin/env bash
# Installs swarmlet on a Debian 12 host (a Vagrant VM or any fresh machine), as root:
#
#   - Debian packages: docker.io (only if no Docker Engine answers and none is installed),
#     python3-venv, busybox-static, iptables, iproute2 (service VIPs), curl, ca-certificates;
#   - swarmlet from the repository REPO into the virtualenv /opt/swarmlet/venv (pip), linked as
#     /usr/local/bin/swarmlet; skipped when that exact source is already installed;
#   - the systemd unit swarmlet-agent.service (enabled; it starts once the node has an identity),
#     only when systemd is PID 1: in a container without it this step is skipped with a message;
#   - the demo images (stacks/build-images.sh: swarmlet/busybox:1, swarmlet/web:1 and :2) unless
#     --no-images. There is no registry: every node needs them built locally.
#
# With --role, the host also creates or joins a cluster (skipped if /var/lib/swarmlet already
# holds a node). `swarmlet init`/`join` write the identity and start a background agent; the
# script then stops that agent (SIGTERM: a clean stop, the node stays a member) and hands the
# data dir over to systemd, so that from then on one supervised process runs it. Without systemd
# the background agent keeps running.
#
# Usage: provision.sh [REPO] [--no-images] [--role init|join --advertise-addr A [--name N]
#                                           [--token T --join HOST:PORT]]
#   REPO                the swarmlet repository (default: this script's parent directory)
#   --no-images         do not build the demo images
#   --role init         create a cluster with this host as its first manager
#   --role join         join the cluster at --join HOST:PORT with --token T
#   --advertise-addr A  the address the other nodes reach this one on (needed with --role)
#   --name N            node name (default: the host name)
#
# Idempotent: running it again changes nothing that is already in place.
set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "provision.sh: error: $*" >&2; exit 1; }
say() { echo "provision.sh: $*"; }

repo=""
images=1
role=""
advertise=""
token=""
join=""
name=""
while [ $# -gt 0 ]; do
    case "$1" in
        --no-images) images=0 ;;
        --role) role="${2:?--role needs init or join}"; shift ;;
        --advertise-addr) advertise="${2:?--advertise-addr needs an address}"; shift ;;
        --token) token="${2:?--token needs a join token}"; shift ;;
        --join) join="${2:?--join needs HOST:PORT}"; shift ;;
        --name) name="${2:?--name needs a name}"; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "provision.sh: unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) [ -z "$repo" ] || { echo "provision.sh: one REPO only" >&2; exit 2; }; repo="$1" ;;
    esac
    shift
done
case "$role" in
    "") ;;
    init) [ -n "$advertise" ] || die "--role init needs --advertise-addr" ;;
    join) [ -n "$advertise" ] && [ -n "$token" ] && [ -n "$join" ] \
              || die "--role join needs --advertise-addr, --token and --join" ;;
    *) die "--role is init or join, not '$role'" ;;
esac

[ "$(id -u)" = 0 ] || die "run me as root (sudo $0 ...)"
command -v apt-get >/dev/null || die "this script is for Debian 12 (no apt-get here)"
repo="$(cd "${repo:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd)"
[ -f "$repo/pyproject.toml" ] && [ -d "$repo/swarmlet" ] || die "$repo is not the swarmlet repository"

prefix=/opt/swarmlet
venv=$prefix/venv
data_dir=/var/lib/swarmlet
unit=swarmlet-agent.service
sw=$venv/bin/swarmlet
export DEBIAN_FRONTEND=noninteractive

# sd_booted(3): systemd is PID 1 exactly when /run/systemd/system exists.
has_systemd() { [ -d /run/systemd/system ]; }
docker_ok() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# ---------------------------------------------------------------- Debian packages

need=()
for pkg in python3-venv busybox-static iptables iproute2 curl ca-certificates; do
    installed "$pkg" || need+=("$pkg")
done
# Any working engine will do (docker-ce, docker.io, ...); docker.io only where there is none.
if ! docker_ok && ! command -v dockerd >/dev/null; then
    need+=(docker.io)
    # One of docker.io's recommends that matters: with AppArmor on in the kernel (Debian's
    # default), dockerd cannot start containers without apparmor_parser.
    if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] && ! installed apparmor; then
        need+=(apparmor)
    fi
fi
if [ ${#need[@]} -gt 0 ]; then
    say "installing Debian packages: ${need[*]}"
    # Without systemd (a container, a chroot), forbid package scripts from starting services, as
    # Debian's policy-rc.d(8) allows: docker.io's would try to start dockerd and fail there.
    policy=/usr/sbin/policy-rc.d
    if ! has_systemd && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
        added_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ -n "${added_policy:-}" ]; then rm -f "$policy"; trap - EXIT; fi
else
    say "Debian packages: all present"
fi

# ---------------------------------------------------------------- Docker Engine

if ! docker_ok; then
    if has_systemd; then
        say "starting docker.service"
        systemctl enable --now docker.service >/dev/null 2>&1 || true
    elif command -v dockerd >/dev/null; then
        say "no systemd: starting dockerd in the background (log: /var/log/dockerd-swarmlet.log)"
        nohup dockerd >>/var/log/dockerd-swarmlet.log 2>&1 </dev/null &
        dockerd_pid=$!
    fi
    for _ in $(seq 1 60); do
        docker_ok && break
        # Give up at once when our dockerd died (no privileges in a plain container).
        [ -z "${dockerd_pid:-}" ] || kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.5
    done
fi
if docker_ok; then
    say "Docker Engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
else
    echo "provision.sh: warning: no Docker Engine answers; swarmlet needs one to run tasks" >&2
    [ -z "$role" ] || die "--role $role needs a Docker Engine"
    [ "$images" = 0 ] || die "building the demo images needs a Docker Engine (or pass --no-images)"
fi

# ---------------------------------------------------------------- swarmlet itself

# The files pip builds from; their hash says whether the installed copy is this source.
source_files() {
    (cd "$repo" && find pyproject.toml README.md swarmlet \
        -name __pycache__ -prune -o -name '*.pyc' -o -type f -print | LC_ALL=C sort)
}
source_hash="$(cd "$repo" && source_files | xargs -d '\n' sha256sum | sha256sum | cut -c1-16)"
stamp=$prefix/installed-source
changed=0
if [ -x "$sw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$source_hash" ] && "$sw" --version >/dev/null 2>&1; then
    say "swarmlet: $("$sw" --version) already installed from this source"
else
    changed=1
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "swarmlet needs Python 3.11 or later; this host has $(python3 --version)"
    mkdir -p "$prefix"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # Build from a private copy: the repository may be read-only or owned by another user (a
    # synced folder), and setuptools writes its egg-info and build/ next to the sources.
    build="$(mktemp -d)"
    (cd "$repo" && source_files | tar -c --no-recursion -T -) | tar -C "$build" -x
    say "installing swarmlet into $venv (pip; dependencies from PyPI)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$build" \
        || { rm -rf "$build"; die "pip install failed"; }
    rm -rf "$build"
    echo "$source_hash" >"$stamp"
    say "swarmlet: $("$sw" --version) installed"
fi
ln -sfn "$sw" /usr/local/bin/swarmlet

# ---------------------------------------------------------------- systemd unit

unit_src="$repo/vagrant/$unit"
if has_systemd; then
    if ! cmp -s "$unit_src" "/etc/systemd/system/$unit"; then
        install -m 0644 "$unit_src" "/etc/systemd/system/$unit"
        systemctl daemon-reload
        say "installed /etc/systemd/system/$unit"
    fi
    systemctl enable "$unit" >/dev/null 2>&1
    # A new version of swarmlet takes over a running agent (a clean stop, then a start).
    if [ "$changed" = 1 ] && systemctl is-active --quiet "$unit"; then
        say "restarting $unit on the new version"
        systemctl restart "$unit"
    elif [ -f "$data_dir/identity.msgpack" ] && ! systemctl is-active --quiet "$unit"; then
        say "starting $unit"
        systemctl start "$unit"
    fi
else
    say "systemd is not PID 1 here (a container?): skipping $unit;" \
        "run the agent with \`swarmlet agent --detach\` instead"
fi

# ---------------------------------------------------------------- demo images

if [ "$images" = 1 ]; then
    say "building the demo images"
    bash "$repo/stacks/build-images.sh"
fi

# ---------------------------------------------------------------- init / join

# Stop the background agent `init`/`join` started, by its pid file; SIGTERM is a clean stop.
stop_background_agent() {
    local pid
    pid="$(cat "$data_dir/agent.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    die "the background agent (pid $pid) did not stop within 20 s"
}

# Wait until this node's agent is a member and sees the cluster: the same conditions as
# `swarmlet init` (a Raft leader is known) and `swarmlet join` (another node is alive) use.
wait_ready() {
    local ready
    if [ "$role" = init ]; then
        ready='s["member"] and s["raft"]["leader_id"] is not None'
    else
        ready='s["member"] and s["gossip"]["alive"] > 1'
    fi
    for _ in $(seq 1 120); do
        if "$sw" status --data-dir "$data_dir" 2>/dev/null | "$venv/bin/python" -c "
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if $ready else 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    die "the agent did not become ready within 60 s (journalctl -u $unit)"
}

run_agent() {
    if has_systemd; then
        systemctl start "$unit"
    elif ! "$sw" status --data-dir "$data_dir" >/dev/null 2>&1; then
        "$sw" agent --detach --data-dir "$data_dir"
    fi
}

if [ -n "$role" ]; then
    args=(--advertise-addr "$advertise" --data-dir "$data_dir")
    [ -z "$name" ] || args+=(--name "$name")
    if [ -f "$data_dir/identity.msgpack" ]; then
        say "$data_dir already holds a node: not running $role again"
    elif [ "$role" = init ]; then
        say "creating a cluster advertised on $advertise"
        "$sw" init "${args[@]}"
        if has_systemd; then stop_background_agent; fi
    else
        say "joining the cluster at $join"
        "$sw" join --token "$token" "${args[@]}" "$join"
        if has_systemd; then stop_background_agent; fi
    fi
    run_agent
    wait_ready
    say "the agent is running; \`swarmlet node ls\` shows the cluster"
fi
say "done"
