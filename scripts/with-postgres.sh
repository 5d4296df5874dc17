#!/usr/bin/env bash
# Run CMD with a throwaway PostgreSQL server, then stop it and delete it.
#
#   scripts/with-postgres.sh CMD [ARGS...]
#
# If AGENTCA_TEST_DATABASE_URL is already set, CMD is exec'd unchanged. Otherwise a fresh
# cluster is created in a temp dir under ${TMPDIR:-/tmp} with the newest
# /usr/lib/postgresql/*/bin (override with PG_BINDIR), listening only on 127.0.0.1 on a free
# port and on a unix socket inside the temp dir. When run as root the server runs as the
# `postgres` system user (or a dedicated `agentca-pg` system user, created if needed).
#
# Exported to CMD:
#   AGENTCA_TEST_DATABASE_URL  postgresql+psycopg://postgres@127.0.0.1:PORT/agentca_test
#   AGENTCA_TEST_PG_BINDIR     the server's bin dir (pg_ctl, ...)
#   AGENTCA_TEST_PG_DATADIR    the cluster's data dir
#   AGENTCA_TEST_PG_RUNAS      user to run pg_ctl as (`runuser -u USER --`), empty if not root
#   AGENTCA_TEST_PG_LOGFILE    the server log
#   AGENTCA_TEST_PG_PORT, AGENTCA_TEST_PG_SOCKETDIR
# The server and the temp dir are removed on exit, also when CMD fails or on a signal;
# the exit status is CMD's.
set -euo pipefail

if (($# == 0)); then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

if [[ -n ${AGENTCA_TEST_DATABASE_URL:-} ]]; then
    exec "$@"
fi

die() {
    echo "with-postgres: error: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- find the server
if [[ -n ${PG_BINDIR:-} ]]; then
    bindir=$PG_BINDIR
else
    bindir=$(
        for d in /usr/lib/postgresql/*/bin; do
            [[ -x $d/initdb ]] && echo "$d"
        done | sort -V | tail -n 1
    )
fi
[[ -n $bindir && -x $bindir/initdb && -x $bindir/pg_ctl ]] ||
    die "no PostgreSQL server found under /usr/lib/postgresql/*/bin (run scripts/bootstrap.sh test)"

# ---------------------------------------------------------------- who runs it
runas=
if ((EUID == 0)); then
    if id -u postgres >/dev/null 2>&1; then
        runas=postgres
    else
        runas=agentca-pg
        if ! id -u "$runas" >/dev/null 2>&1; then
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$runas" || die "cannot create system user $runas"
        fi
    fi
fi

as_pg() {
    # Run from inside the temp dir so the server user never needs access to the caller's cwd.
    if [[ -n $runas ]]; then
        (cd "$tmp" && runuser -u "$runas" -- "$@")
    else
        (cd "$tmp" && "$@")
    fi
}

# ---------------------------------------------------------------- temp dir + cleanup
make_tmp() {
    local t
    t=$(mktemp -d "$1/agentca-pg.XXXXXX") || return 1
    if [[ -n $runas ]]; then
        chown "$runas": "$t"
        # The server user must be able to reach the dir (e.g. TMPDIR under /root is not).
        if ! runuser -u "$runas" -- test -w "$t"; then
            rm -rf "$t"
            return 1
        fi
    fi
    echo "$t"
}

tmp=
child=
# shellcheck disable=SC2317  # invoked from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if [[ -n $tmp && -d $tmp ]]; then
        if [[ -f $tmp/data/postmaster.pid ]]; then
            as_pg "$bindir/pg_ctl" -D "$tmp/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
                true
        fi
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

tmp=$(make_tmp "${TMPDIR:-/tmp}") || tmp=$(make_tmp /tmp) ||
    die "cannot make a temp dir the server user ${runas:-$(id -un)} can write"

# ---------------------------------------------------------------- initdb + start
as_pg "$bindir/initdb" -D "$tmp/data" --auth=trust -U postgres --encoding=UTF8 --locale=C \
    --no-sync >"$tmp/initdb.log" 2>&1 || {
    cat "$tmp/initdb.log" >&2
    die "initdb failed"
}
as_pg mkdir "$tmp/sock"

free_port() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
            return
        fi
    done
    echo $((20000 + RANDOM % 20000))
}

started=
for _attempt in 1 2 3; do
    port=$(free_port)
    # Settings live in postgresql.auto.conf so that a plain `pg_ctl start` (tests restarting
    # the server after an outage) comes back on the same address.
    cat >"$tmp/data/postgresql.auto.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp/sock'
max_connections = 200
fsync = off
full_page_writes = off
EOF
    if as_pg "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 30 start \
        >/dev/null 2>&1; then
        started=1
        break
    fi
done
[[ -n $started ]] || {
    tail -n 20 "$tmp/server.log" >&2 || true
    die "the PostgreSQL server did not start"
}

ready=
for _i in $(seq 1 60); do
    if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then
        ready=1
        break
    fi
    sleep 0.5
done
[[ -n $ready ]] || die "PostgreSQL on 127.0.0.1:$port not ready after 30 s"

"$bindir/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c 'CREATE DATABASE agentca_test' >/dev/null || die "cannot create database agentca_test"

export AGENTCA_TEST_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$port/agentca_test"
export AGENTCA_TEST_PG_BINDIR=$bindir
export AGENTCA_TEST_PG_DATADIR=$tmp/data
export AGENTCA_TEST_PG_RUNAS=$runas
export AGENTCA_TEST_PG_LOGFILE=$tmp/server.log
export AGENTCA_TEST_PG_PORT=$port
export AGENTCA_TEST_PG_SOCKETDIR=$tmp/sock

# Run CMD as a child (not exec) so the trap can tear the server down afterwards; keep stdin.
"$@" <&0 &
child=$!
set +e
wait "$child"
rc=$?
set -e
child=
exit "$rc"
