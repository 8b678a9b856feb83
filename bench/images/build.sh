#!/bin/sh
# Build swarmlet-bench/nginx:1 without a registry (what bench/proxy.py does; handy on its own).
#   sh bench/images/build.sh
# 1. A Debian 12 base: reuse swarmlet-test/debian:12 (another engineer builds it the same way) or
#    swarmlet-bench/debian:12 if present; otherwise debootstrap --variant=minbase bookworm with
#    the host's apt mirror and `docker import` it.
# 2. bench/images/nginx/Dockerfile on top of it (apt-get install nginx-light).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mirror=$(grep -h -o -E 'https?://[^ ]*debian/?( |$)' /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}
if docker image inspect swarmlet-test/debian:12 >/dev/null 2>&1; then
    base=swarmlet-test/debian:12
else
    base=swarmlet-bench/debian:12
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        dir=$(mktemp -d /var/tmp/bench-debootstrap-XXXXXX)
        trap 'rm -rf "$dir"' EXIT
        debootstrap --variant=minbase bookworm "$dir" "$mirror"
        tar -C "$dir" -c . | docker import - "$base"
    fi
fi
docker build --build-arg "BASE=$base" -t swarmlet-bench/nginx:1 "$here/nginx"
