#!/usr/bin/env bash
# Make sure the services the tests use are up, starting each with the command the machine's docs give if it is
# down, and failing loudly if it does not come up:
#   PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres): the Airflow metadata databases (make test, make e2e);
#   Redis on 127.0.0.1:6379: the Celery broker of the CeleryExecutor deployment (make e2e; `--redis`).
set -euo pipefail

up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure() {
    local name=$1 host=$2 port=$3 start=$4
    if up "$host" "$port"; then
        echo "$name: up on $host:$port"
        return 0
    fi
    echo "$name: down, starting it: $start"
    bash -c "$start" || true
    for _ in $(seq 60); do
        if up "$host" "$port"; then
            echo "$name: up on $host:$port"
            return 0
        fi
        sleep 0.5
    done
    echo "$name did not come up on $host:$port within 30 s (started with: $start)" >&2
    exit 1
}

if ! up 127.0.0.1 5432 && [[ ! -d /etc/postgresql ]]; then
    echo "PostgreSQL is not listening on 127.0.0.1:5432 and no local cluster is installed" >&2
    exit 1
fi
ensure PostgreSQL 127.0.0.1 5432 \
    'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start'
if [[ "${1:-}" == "--redis" ]]; then
    ensure Redis 127.0.0.1 6379 \
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'
fi
