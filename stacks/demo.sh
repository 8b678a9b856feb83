#!/usr/bin/env bash
# The demo: a three-agent swarmlet cluster on this machine (127.0.0.1-3, one data dir each under
# /tmp/swarmlet-demo), with the web stack deployed behind the routing mesh.
#
#   bash stacks/demo.sh          # set up and start (idempotent: stops a previous demo first)
#   bash stacks/demo.sh stop     # stop the agents, remove the demo's containers and networks
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=/tmp/swarmlet-demo
port=7946
sw=.venv/bin/swarmlet

stop() {
  for d in "$root"/n*; do
    [ -f "$d/agent.pid" ] && kill -9 "$(cat "$d/agent.pid")" 2>/dev/null || true
  done
  if [ -f "$root/cluster-id" ]; then
    ids=$(docker ps -aq --filter "label=swarmlet.cluster=$(cat "$root/cluster-id")")
    [ -z "$ids" ] || docker rm -f $ids >/dev/null
    nets=$(docker network ls -q --filter "label=swarmlet.cluster=$(cat "$root/cluster-id")")
    [ -z "$nets" ] || docker network rm $nets >/dev/null
  fi
  rm -rf "$root"
}

if [ "${1:-}" = stop ]; then stop; echo "demo stopped"; exit 0; fi

bash .ci/setup.sh
bash stacks/build-images.sh
stop
mkdir -p "$root"
$sw init --advertise-addr 127.0.0.1 --port $port --publish-addr 127.0.0.1 --name n1 --data-dir "$root/n1"
$sw status --data-dir "$root/n1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster_id"])' > "$root/cluster-id"
manager=$($sw join-token -q manager --data-dir "$root/n1")
worker=$($sw join-token -q worker --data-dir "$root/n1")
$sw join --token "$manager" --advertise-addr 127.0.0.2 --port $port --publish-addr 127.0.0.2 --name n2 --data-dir "$root/n2" 127.0.0.1:$port
$sw join --token "$worker" --advertise-addr 127.0.0.3 --port $port --publish-addr 127.0.0.3 --name n3 --data-dir "$root/n3" 127.0.0.1:$port
$sw stack deploy -c stacks/web.yml web --data-dir "$root/n1"
echo
$sw node ls --data-dir "$root/n1"
echo
$sw stack ps web --data-dir "$root/n1"
echo
echo "Six requests to n2's port 8080 go round-robin over the six replicas, wherever they run:"
.venv/bin/python - <<'PY'
import urllib.request

for _ in range(6):
    print(urllib.request.urlopen("http://127.0.0.2:8080/", timeout=5).read().decode().strip())
PY
cat <<MSG

The demo cluster is running (data dirs under $root). Try:
  export SWARMLET_DATA_DIR=$root/n1
  $sw dashboard
  $sw service scale web_app=9
  kill -9 \$(cat $root/n3/agent.pid)      # watch the replicas move
  # service discovery: from inside any replica, the name "app" reaches the service's replicas
  docker exec \$(docker ps -q --filter label=swarmlet.service=web_app | head -1) \\
    sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc app 80"
  bash stacks/demo.sh stop
MSG
