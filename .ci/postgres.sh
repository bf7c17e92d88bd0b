#!/usr/bin/env bash
# A private PostgreSQL server for the tests that need one (tests/Ullme.MLNet.Tests/Orleans/PostgresSchemaTests.cs and
# whatever else reads ULLME_TEST_POSTGRES). After
#
#     .ci/postgres.sh            # start (idempotent: exits 0 when it already runs)
#     export ULLME_TEST_POSTGRES="Host=127.0.0.1;Port=54329;Username=ullme;Password=ullme;Database=ullme_orleans"
#
# the tests connect with that connection string; `.ci/postgres.sh stop` stops the server (its data is kept under
# the data folder, so the next start is quick; delete the folder for a fresh one).
#
# The server: PostgreSQL from the Debian package (postgresql-15, binaries in /usr/lib/postgresql/15/bin; the newest
# /usr/lib/postgresql/*/bin otherwise, or ULLME_PG_BIN), its own cluster in /tmp/ullme-pg (ULLME_PG_ROOT) made with
# initdb, listening on 127.0.0.1:54329 (ULLME_PG_PORT; not 5432, so it does not clash with a system cluster) and on a
# Unix socket in that folder. TCP connections authenticate with a password (scram-sha-256): user `ullme`, password
# `ullme`, allowed to create databases (tests make throwaway ones), owner of database `ullme_orleans`. The socket
# trusts local users (the superuser `postgres` administers through it). Run as root (the server then runs as the
# user `postgres`) or as an ordinary user (the server runs as that user). Prints nothing but errors.
#
# Usage: .ci/postgres.sh [start|stop|status]
set -euo pipefail

ROOT="${ULLME_PG_ROOT:-/tmp/ullme-pg}"
DATA="$ROOT/data"
LOG="$ROOT/server.log"
PORT="${ULLME_PG_PORT:-54329}"
DB_USER=ullme
DB_PASSWORD=ullme
DB_NAME=ullme_orleans

die() { echo "postgres.sh: $*" >&2; exit 1; }

if [[ -n "${ULLME_PG_BIN:-}" ]]; then
    BIN="$ULLME_PG_BIN"
elif [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
    BIN=/usr/lib/postgresql/15/bin
else
    BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
[[ -n "$BIN" && -x "$BIN/pg_ctl" && -x "$BIN/initdb" ]] || die "PostgreSQL binaries not found (install postgresql-15 or set ULLME_PG_BIN)"

# Everything that touches the cluster runs as its owner: `postgres` when we are root (the server refuses to run as root).
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "user 'postgres' does not exist (install postgresql-15)"
    OWNER=postgres
    as_owner() { runuser -u postgres -- "$@"; }
else
    OWNER="$(id -un)"
    as_owner() { "$@"; }
fi

running() { [[ -f "$DATA/PG_VERSION" ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

# psql as the superuser over the private socket (trusted), quiet, failing on the first error.
admin_sql() { as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$ROOT" -p "$PORT" -U postgres -d postgres -tA "$@"; }

show_log() { [[ -f "$LOG" ]] && tail -n 20 "$LOG" >&2 || true; }

init_cluster() {
    mkdir -p "$ROOT"
    [[ "$OWNER" == postgres ]] && chown postgres: "$ROOT"
    chmod 0755 "$ROOT"
    local pwfile
    pwfile="$(mktemp)"
    # The superuser gets a random password it never needs (it administers through the trusted socket).
    head -c 24 /dev/urandom | base64 > "$pwfile"
    [[ "$OWNER" == postgres ]] && chown postgres: "$pwfile"
    if ! as_owner "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$ROOT/initdb.log" 2>&1; then
        rm -f "$pwfile"
        cat "$ROOT/initdb.log" >&2
        die "initdb failed for $DATA"
    fi
    rm -f "$pwfile"
    cat >> "$DATA/postgresql.conf" <<CONF

# .ci/postgres.sh: a private test server
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$ROOT'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
    # Only loopback over TCP, with a password; the socket trusts local users.
    cat > "$DATA/pg_hba.conf" <<HBA
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
HBA
    [[ "$OWNER" == postgres ]] && chown postgres: "$DATA/postgresql.conf" "$DATA/pg_hba.conf"
    return 0
}

ensure_role_and_database() {
    admin_sql -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER') THEN
            CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
        ELSE
            ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
        END IF;
    END \$\$;" >/dev/null
    if [[ -z "$(admin_sql -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]]; then
        admin_sql -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
    fi
}

start() {
    if running; then
        ensure_role_and_database
        return 0
    fi
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
        die "port $PORT on 127.0.0.1 is taken by another server (not the one in $DATA); stop it or set ULLME_PG_PORT"
    fi
    [[ -f "$DATA/PG_VERSION" ]] || init_cluster
    touch "$LOG"
    [[ "$OWNER" == postgres ]] && chown postgres: "$LOG"
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null 2>&1; then
        show_log
        die "the server in $DATA did not start (log: $LOG)"
    fi
    # pg_ctl -w waited for it; make sure TCP answers too before anyone connects.
    local i
    for i in $(seq 1 60); do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
        sleep 0.5
    done
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || { show_log; die "the server does not answer on 127.0.0.1:$PORT"; }
    ensure_role_and_database
}

stop() {
    running || return 0
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1; then
        show_log
        die "the server in $DATA did not stop"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) running ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac
