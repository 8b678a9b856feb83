#!/usr/bin/env bash
# Proves that vagrant/provision.sh installs swarmlet on a fresh Debian 12 host, without a registry:
#
#   1. builds a minimal Debian 12 image from Debian's own mirror (debootstrap --variant=minbase,
#      then `docker import`), tagged swarmlet-test/debian:12 and cached by tag: built once per
#      machine (about 3 minutes), reused afterwards;
#   2. copies the repository into a fresh container of it and runs `provision.sh --no-images` there
#      (Debian packages from the mirror, swarmlet and its dependencies from PyPI), then checks
#      `swarmlet --version` and `swarmlet init --help`;
#   3. runs provision.sh a second time in the same container: it must succeed and skip the install;
#   4. makes two containers of the result that use this host's Docker Engine (its socket mounted),
#      runs `provision.sh --role init` in one and `--role join` in the other, and checks that
#      `swarmlet node ls` shows both nodes ready (skipped with --no-cluster).
#
# The containers have no systemd, and the first has no usable Docker Engine (containers are not
# privileged here): provision.sh must say so and carry on, which is part of what this checks. The
# systemd path (the unit, the hand-over from `init` to systemd) needs a real host or VM.
#
# Usage: vagrant/test-provision.sh [--rebuild-image] [--keep] [--no-cluster]
#   --rebuild-image   rebuild the cached base image
#   --keep            keep the containers (their names are printed) for a look inside
#   --no-cluster      skip step 4
# Needs root (debootstrap) and a Docker Engine; installs debootstrap with apt if it is missing.
set -euo pipefail

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

image=swarmlet-test/debian:12
rebuild=0
keep=0
cluster=1
for arg in "$@"; do
    case "$arg" in
        --rebuild-image) rebuild=1 ;;
        --keep) keep=1 ;;
        --no-cluster) cluster=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "test-provision.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$SECONDS

# The first Debian mirror this host's apt uses for bookworm (deb822 or one-line format), else the
# default one. Security and updates suites are left out: the base image only needs the release.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri="$(awk '
            /^[[:space:]]*$/ { if (uri != "" && suites ~ /(^| )bookworm( |$)/) { print uri; exit } uri=""; suites="" }
            /^URIs:/ { uri=$2 }
            /^Suites:/ { $1=""; suites=$0 " " }
            END { if (uri != "" && suites ~ /(^| )bookworm( |$)/) print uri }' "$f" | head -n1)"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri="$(awk '{ line = $0; gsub(/\[[^]]*\]/, "", line); split(line, w, " ") }
            w[1] == "deb" && w[3] == "bookworm" { print w[2]; exit }' "$f")"
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    echo http://deb.debian.org/debian
}

build_image() {
    exec 8>"${TMPDIR:-/tmp}/swarmlet-test-debian-image.lock"
    flock 8  # parallel test sessions build the image once
    if [ "$rebuild" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
        echo "$image: cached"
        return
    fi
    # bench/images/build.sh makes the same image (debootstrap minbase bookworm, docker import)
    # under its own name, and reuses this one: whichever runs first builds it for both.
    if [ "$rebuild" = 0 ] && docker image inspect swarmlet-bench/debian:12 >/dev/null 2>&1; then
        docker tag swarmlet-bench/debian:12 "$image"
        echo "$image: tagged from swarmlet-bench/debian:12 (the same recipe)"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "test-provision.sh: building $image needs root (debootstrap)" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    local mirror rootfs started=$SECONDS
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/swarmlet-debootstrap.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$rootfs'" EXIT
    echo "$image: debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; echo "debootstrap failed" >&2; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --change "LABEL swarmlet.test-image=debootstrap-minbase-bookworm" \
        - "$image" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    echo "$image: built in $((SECONDS - started)) s"
}

build_image

# What provision.sh needs from the repository: the package, its metadata, the scripts.
files=(pyproject.toml README.md swarmlet vagrant stacks)
name="swarmlet-test-provision-$$"
snapshot="swarmlet-test/provisioned:$$"
cleanup() {
    local c
    for c in "$name" "$name-a" "$name-b"; do
        docker inspect "$c" >/dev/null 2>&1 || continue
        if [ "$keep" = 1 ]; then
            echo "kept container $c (docker exec -it $c bash; docker rm -f $c)"
        else
            docker rm -f "$c" >/dev/null 2>&1 || true
        fi
    done
    [ "$keep" = 1 ] || docker rmi "$snapshot" >/dev/null 2>&1 || true
}
trap cleanup EXIT
# Downloaded .deb files persist in a volume: the next run on this machine fetches nothing again.
docker run -d --name "$name" --label swarmlet.test=provision \
    -v swarmlet-test-apt-archives:/var/cache/apt/archives "$image" sleep infinity >/dev/null
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' --exclude=.vagrant -c "${files[@]}" \
    | docker exec -i "$name" bash -c 'mkdir -p /src && tar -C /src -x'

# Make dpkg quicker in the throwaway container, as Debian's official container images do: no
# fsync per file, no manual pages or documentation.
docker exec -i "$name" bash -c 'cat >/etc/dpkg/dpkg.cfg.d/swarmlet-test-speedup' <<'CFG'
force-unsafe-io
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
CFG

# The container trusts the certificate authorities this host trusts (where pip's are, else the
# system's): on a network whose HTTPS goes through an intercepting proxy, that is what makes
# PyPI reachable from inside, as it is from here. An ordinary network needs none of this.
host_ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
exec_env=()
if [ -r "$host_ca" ]; then
    docker cp -L "$host_ca" "$name:/etc/swarmlet-test-ca.pem"
    exec_env+=(-e PIP_CERT=/etc/swarmlet-test-ca.pem)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT \
    http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!var:-}" ] || exec_env+=(-e "$var=${!var}")
done

# Each line of the provision's output with the time it appeared: where the minutes go.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%T)" "$line"; done; }

started=$SECONDS
echo "--- provision.sh --no-images (fresh container)"
docker exec "${exec_env[@]}" "$name" bash /src/vagrant/provision.sh --no-images 2>&1 | stamp
first=$((SECONDS - started))

echo "--- checks"
docker exec "$name" swarmlet --version
docker exec "$name" swarmlet init --help >/dev/null
docker exec "$name" /opt/swarmlet/venv/bin/python -c 'import swarmlet.node.main, swarmlet.cli.main'
echo "swarmlet --version, swarmlet init --help: ok"

started=$SECONDS
echo "--- provision.sh --no-images (again: idempotent)"
docker exec "${exec_env[@]}" "$name" bash /src/vagrant/provision.sh --no-images 2>&1 | stamp
second=$((SECONDS - started))
docker exec "$name" swarmlet --version >/dev/null

if [ "$cluster" = 1 ]; then
    started=$SECONDS
    echo "--- provision.sh --role init / --role join: two containers on this host's Docker Engine"
    # Two "hosts" made from the provisioned container (provision.sh's quick path), each seeing
    # this host's engine through its socket: an engine answers, so none is installed or started.
    docker commit "$name" "$snapshot" >/dev/null
    for c in "$name-a" "$name-b"; do
        docker run -d --name "$c" --label swarmlet.test=provision \
            -v /var/run/docker.sock:/var/run/docker.sock "$snapshot" sleep infinity >/dev/null
    done
    ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
    ip_a="$(ip_of "$name-a")"
    ip_b="$(ip_of "$name-b")"
    docker exec "$name-a" bash /src/vagrant/provision.sh --no-images \
        --role init --advertise-addr "$ip_a" --name node-a 2>&1 | stamp
    token="$(docker exec "$name-a" swarmlet join-token -q manager)"
    docker exec "$name-b" bash /src/vagrant/provision.sh --no-images \
        --role join --advertise-addr "$ip_b" --name node-b --token "$token" --join "$ip_a:7946" \
        2>&1 | stamp
    echo "--- provision.sh --role init again (idempotent: the node stays as it is)"
    docker exec "$name-a" bash /src/vagrant/provision.sh --no-images \
        --role init --advertise-addr "$ip_a" --name node-a 2>&1 | stamp
    docker exec "$name-a" swarmlet node ls
    ready="$(docker exec "$name-a" swarmlet node ls --format json | docker exec -i "$name-a" \
        /opt/swarmlet/venv/bin/python -c \
        'import json, sys; print(sum(n["status"] == "ready" for n in json.load(sys.stdin)))')"
    [ "$ready" = 2 ] || { echo "test-provision.sh: $ready of 2 nodes ready" >&2; exit 1; }
    cluster_s=$((SECONDS - started))
    echo "two-node cluster: ok (${cluster_s} s)"
fi

echo "test-provision.sh: ok (first provision ${first} s, second ${second} s, total $((SECONDS - t0)) s)"
