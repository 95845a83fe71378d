#!/usr/bin/env bash
# Throwaway PostgreSQL 15 (127.0.0.1:54329, trust auth, database `lifeboat`) and etcd
# (client 127.0.0.1:23790, peer 23800) for the coordination tests.
#
# Sourced by .ci/run: installs what is missing, starts both in temp dirs, waits until they
# answer, exports LIFEBOAT_TEST_PG / LIFEBOAT_TEST_ETCD (+ LIFEBOAT_REQUIRE_*=1) and stops
# them on exit, chained with any EXIT trap already set.
# Locally: `LIFEBOAT_SERVICES_KEEP=1 source .ci/services.sh` leaves them running (no trap).
# If something already answers on a port, it is reused and left alone.

LIFEBOAT_PG_PORT=54329
LIFEBOAT_ETCD_PORT=23790
LIFEBOAT_ETCD_PEER_PORT=23800
LIFEBOAT_PG_BIN=/usr/lib/postgresql/15/bin

lifeboat_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

lifeboat_wait_port() { # port what
  for _ in $(seq 1 300); do
    lifeboat_port_open "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not start on port $1" >&2
  return 1
}

lifeboat_services_install() {
  local missing=()
  [ -x "$LIFEBOAT_PG_BIN/postgres" ] || missing+=(postgresql-15)
  command -v etcd >/dev/null || missing+=(etcd-server)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian starts packaged services on their default ports; ours use their own ports.
  fi
}

lifeboat_start_pg() {
  if lifeboat_port_open "$LIFEBOAT_PG_PORT"; then
    echo "== PostgreSQL already answers on 127.0.0.1:$LIFEBOAT_PG_PORT; reusing it"
    return 0
  fi
  echo "== start PostgreSQL 15 on 127.0.0.1:$LIFEBOAT_PG_PORT"
  LIFEBOAT_PG_DIR=$(mktemp -d /tmp/lifeboat-pg.XXXXXX)
  chown postgres: "$LIFEBOAT_PG_DIR"
  runuser -u postgres -- "$LIFEBOAT_PG_BIN/initdb" -D "$LIFEBOAT_PG_DIR/data" -U postgres \
    -A trust --no-sync >/dev/null
  runuser -u postgres -- "$LIFEBOAT_PG_BIN/pg_ctl" -D "$LIFEBOAT_PG_DIR/data" \
    -l "$LIFEBOAT_PG_DIR/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $LIFEBOAT_PG_PORT -k $LIFEBOAT_PG_DIR -c fsync=off" \
    start >/dev/null
  runuser -u postgres -- "$LIFEBOAT_PG_BIN/psql" -h 127.0.0.1 -p "$LIFEBOAT_PG_PORT" \
    -U postgres -qc 'CREATE DATABASE lifeboat' >/dev/null
  export LIFEBOAT_PG_DIR
}

lifeboat_start_etcd() {
  if lifeboat_port_open "$LIFEBOAT_ETCD_PORT"; then
    echo "== etcd already answers on 127.0.0.1:$LIFEBOAT_ETCD_PORT; reusing it"
    return 0
  fi
  echo "== start etcd on 127.0.0.1:$LIFEBOAT_ETCD_PORT"
  LIFEBOAT_ETCD_DIR=$(mktemp -d /tmp/lifeboat-etcd.XXXXXX)
  etcd --name lifeboat-test --data-dir "$LIFEBOAT_ETCD_DIR/data" \
    --listen-client-urls "http://127.0.0.1:$LIFEBOAT_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$LIFEBOAT_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$LIFEBOAT_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$LIFEBOAT_ETCD_PEER_PORT" \
    --initial-cluster "lifeboat-test=http://127.0.0.1:$LIFEBOAT_ETCD_PEER_PORT" \
    >"$LIFEBOAT_ETCD_DIR/log" 2>&1 &
  LIFEBOAT_ETCD_PID=$!
  export LIFEBOAT_ETCD_DIR LIFEBOAT_ETCD_PID
  lifeboat_wait_port "$LIFEBOAT_ETCD_PORT" etcd
  # The port opens before the member has elected itself; wait for /health.
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$LIFEBOAT_ETCD_PORT/health" 2>/dev/null | grep -q true; then
      return 0
    fi
    sleep 0.1
  done
  echo "etcd did not become healthy; log: $LIFEBOAT_ETCD_DIR/log" >&2
  return 1
}

lifeboat_services_stop() {
  if [ -n "${LIFEBOAT_ETCD_PID:-}" ]; then
    kill "$LIFEBOAT_ETCD_PID" 2>/dev/null || true
  fi
  if [ -n "${LIFEBOAT_PG_DIR:-}" ]; then
    runuser -u postgres -- "$LIFEBOAT_PG_BIN/pg_ctl" -D "$LIFEBOAT_PG_DIR/data" -m immediate \
      stop >/dev/null 2>&1 || true
    rm -rf "$LIFEBOAT_PG_DIR"
  fi
  [ -n "${LIFEBOAT_ETCD_DIR:-}" ] && rm -rf "$LIFEBOAT_ETCD_DIR"
  return 0
}

lifeboat_services_install
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
lifeboat_start_pg
lifeboat_start_etcd
if [ "${LIFEBOAT_SERVICES_KEEP:-0}" != 1 ]; then
  # Chain with the EXIT trap already set (e.g. .ci/run's moto cleanup).
  lifeboat_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
  # shellcheck disable=SC2064
  trap "lifeboat_services_stop; ${lifeboat_prev_trap:-:}" EXIT
fi

export LIFEBOAT_TEST_PG="postgres://postgres@127.0.0.1:$LIFEBOAT_PG_PORT/lifeboat" \
       LIFEBOAT_TEST_ETCD="http://127.0.0.1:$LIFEBOAT_ETCD_PORT" \
       LIFEBOAT_REQUIRE_PG=1 LIFEBOAT_REQUIRE_ETCD=1
