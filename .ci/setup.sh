#!/usr/bin/env bash
# Installs everything swarmlet's tests, demo and benchmarks need on a Debian 12 machine, and makes
# sure a Docker Engine answers. Idempotent: quick when everything is already there.
# Usage: bash .ci/setup.sh            (sourced by .ci/run and stacks/demo.sh)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)  # service VIPs on the nodes' bridges
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx httpd || need_apt+=(busybox-static)
command -v tmux >/dev/null || need_apt+=(tmux)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v ruby >/dev/null || need_apt+=(ruby)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)  # only to verify the unit file
command -v prometheus >/dev/null || need_apt+=(prometheus)  # the metrics test scrapes with it
command -v docker-registry >/dev/null || need_apt+=(docker-registry)  # images pinned to digests (test_registry)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)

docker_ok() { docker info >/dev/null 2>&1; }
if ! docker_ok; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: no Docker Engine answers on /var/run/docker.sock, and installing one needs root." >&2
    echo "       Start Docker (or run this script as root so it can install Debian's docker.io)." >&2
    exit 1
  fi
  command -v dockerd >/dev/null || need_apt+=(docker.io)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: ${need_apt[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! docker_ok; then
  echo "starting dockerd"
  (dockerd >/var/log/dockerd-swarmlet.log 2>&1 &)
  for _ in $(seq 1 60); do docker_ok && break; sleep 0.5; done
  docker_ok || { echo "error: dockerd did not start; see /var/log/dockerd-swarmlet.log" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# An editable install leaves the package uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on
# these machines) every process would compile it again: ~0.3 s more for each agent and command
# to start. Compile it once here, as installing a wheel does.
.venv/bin/python -m compileall -q swarmlet bench >/dev/null
