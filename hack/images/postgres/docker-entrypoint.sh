#!/bin/bash
# The public postgres image's start-up contract, for the chart's bundled PostgreSQL: on first start (no
# $PGDATA/PG_VERSION) initdb with POSTGRES_USER / POSTGRES_PASSWORD (scram-sha-256 for TCP clients), create
# POSTGRES_DB, listen on all addresses; then exec postgres as PID 1. `docker-entrypoint.sh -c k=v` works too.
set -euo pipefail

if [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi
if [ "$1" != "postgres" ]; then
    exec "$@"
fi

export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-}"
AUTH="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$AUTH" != "trust" ]; then
        echo "error: the database is uninitialized and POSTGRES_PASSWORD is empty;" \
             "set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, never outside a sandbox)" >&2
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    echo "Initialising $PGDATA: user $POSTGRES_USER, database $POSTGRES_DB"
    # The password reaches initdb through a pipe, never the command line.
    if [ -n "$POSTGRES_PASSWORD" ]; then
        initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --encoding=UTF8 \
            --auth-local=trust --auth-host="$AUTH" >/dev/null
    else
        initdb --username="$POSTGRES_USER" --encoding=UTF8 --auth-local=trust --auth-host="$AUTH" >/dev/null
    fi
    printf 'host all all all %s\n' "$AUTH" >> "$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >> "$PGDATA/postgresql.conf"
    if [ "$POSTGRES_DB" != "postgres" ]; then
        socket_dir="$(mktemp -d)"
        pg_ctl --silent --wait --log="$socket_dir/init.log" \
            --options="-c listen_addresses='' -c unix_socket_directories=$socket_dir" start
        psql --quiet --no-psqlrc --set=ON_ERROR_STOP=1 --host="$socket_dir" --username="$POSTGRES_USER" \
            --dbname=postgres --set=db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
        pg_ctl --silent --wait --mode=fast stop
        rm -rf "$socket_dir"
    fi
    echo "PostgreSQL init process complete; ready for start up"
fi

exec "$@"
