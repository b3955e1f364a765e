#!/usr/bin/env bash
# Make sure the services the tests use are up: PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres), for the
# Airflow metadata database of the DAG-level tests. The machine starts it before a session; this restarts it if it
# is down, with the command the machine's docs give. (Redis, RabbitMQ, ... are not used by this project.)
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432

pg_up() { (exec 3<>"/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null; }

if pg_up; then
    echo "PostgreSQL: up on $PG_HOST:$PG_PORT"
    exit 0
fi
if [[ ! -d /etc/postgresql ]]; then
    echo "PostgreSQL is not listening on $PG_HOST:$PG_PORT and no local cluster is installed" >&2
    exit 1
fi
echo "PostgreSQL: down, starting it"
pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
for _ in $(seq 60); do
    if pg_up; then
        echo "PostgreSQL: up on $PG_HOST:$PG_PORT"
        exit 0
    fi
    sleep 0.5
done
echo "PostgreSQL did not come up on $PG_HOST:$PG_PORT within 30 s" >&2
exit 1
