#!/bin/sh
# Entrypoint of swarmlet/web: write the body once, then serve it with busybox httpd.
# httpd as PID 1 would ignore SIGTERM (the kernel drops default-action signals to PID 1), so
# `docker stop` would wait the whole grace period: this shell stays PID 1, forwards TERM/INT to
# httpd and exits 0, which makes stops take milliseconds.
pid=""
trap 'if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid"; fi; exit 0' TERM INT
name="${NAME:-$(hostname)}"
printf '%s%s\n' "$(cat /etc/web-body-prefix)" "$name" > /www/index.html
httpd -f -p "${PORT:-80}" -h /www -c /etc/httpd.conf &
pid=$!
wait "$pid"
