#!/usr/bin/env bash
# Build swarmlet's local test and demo images; nothing is pulled (these machines have no registry).
#
#   swarmlet/busybox:1  Debian's static busybox on `scratch`: sh, sleep, nc, wget, httpd...
#   swarmlet/web:1      HTTP on port 80, every GET answers "<name>\n"     (name: $NAME or hostname)
#   swarmlet/web:2      the same, answering "v2 <name>\n"                 (rolling update tests)
#
# Usage: stacks/build-images.sh [--force]
#
# Idempotent and cached by tag: an image is skipped when its tag exists and carries the label
# `swarmlet.recipe` equal to the hash of what it is built from (Dockerfile, files, busybox
# binary), so an edited recipe rebuilds by itself; --force rebuilds everything without cache.
# Concurrent runs (parallel test sessions) serialise on a lock file.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-images.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
recipes="$here/images"
busybox=/bin/busybox
# Engine 20.10 with a CLI that has no buildx plugin: use the classic builder explicitly.
export DOCKER_BUILDKIT=0

exec 9>"${TMPDIR:-/tmp}/swarmlet-build-images.lock"
flock 9

is_static() {
    local out
    [ -x "$1" ] || return 1
    out="$(LC_ALL=C ldd "$1" 2>&1 || true)"
    [[ "$out" == *"not a dynamic executable"* ]]
}

if ! is_static "$busybox"; then
    echo "build-images.sh: installing busybox-static (a static $busybox is needed for FROM scratch)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q busybox-static >&2 || { apt-get update -q >&2 && apt-get install -y -q busybox-static >&2; }
    is_static "$busybox" || { echo "build-images.sh: $busybox is still not a static binary" >&2; exit 1; }
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
replaced=()  # ids of images whose tag moved to a rebuilt image, removed at the end

# build TAG DOCKERFILE RECIPE_HASH FILE... [-- BUILD_ARG...]
build() {
    local tag="$1" dockerfile="$2" recipe="$3"
    shift 3
    local files=() args=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do files+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    for a in "$@"; do args+=(--build-arg "$a"); done

    local current
    current="$(docker image inspect -f '{{ index .Config.Labels "swarmlet.recipe" }}' "$tag" 2>/dev/null || true)"
    if [ "$force" = 0 ] && [ "$current" = "$recipe" ]; then
        echo "$tag: up to date"
        return
    fi
    local ctx="$workdir/${tag//[:\/]/_}"
    mkdir -p "$ctx"
    cp "$recipes/$dockerfile" "$ctx/Dockerfile"
    for f in "${files[@]}"; do cp "$f" "$ctx/"; done
    local cache=() old
    [ "$force" = 1 ] && cache=(--no-cache)
    old="$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)"
    docker build -q "${cache[@]}" "${args[@]}" --label "swarmlet.recipe=$recipe" \
        -t "$tag" "$ctx" >/dev/null 2>"$workdir/build.err" \
        || { cat "$workdir/build.err" >&2; echo "build-images.sh: building $tag failed" >&2; exit 1; }
    echo "$tag: built"
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{ .Id }}' "$tag")" ]; then
        replaced=("$old" "${replaced[@]}")
    fi
}

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

base_recipe="$(hash_of "$recipes/busybox.Dockerfile" "$busybox")"
build swarmlet/busybox:1 busybox.Dockerfile "$base_recipe" "$busybox"

web_files=("$recipes/web-start.sh" "$recipes/httpd.conf")
web_recipe="$(echo "$base_recipe" | cat - "$recipes/web.Dockerfile" "${web_files[@]}" | sha256sum | cut -c1-16)"
build swarmlet/web:1 web.Dockerfile "$web_recipe-1" "${web_files[@]}" -- "BODY_PREFIX="
build swarmlet/web:2 web.Dockerfile "$web_recipe-2" "${web_files[@]}" -- "BODY_PREFIX=v2 "

# Drop the images the rebuilt tags replaced (children first); one still used by a container stays.
for id in "${replaced[@]}"; do
    docker rmi "$id" >/dev/null 2>&1 || true
done
