#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are up for `make test`; start them if they are
# not. Fails with the reason if either cannot be reached: the suite never runs (or skips) without them.
set -uo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && head -c 5 <&3 | grep -q PONG) 2>/dev/null; }

if ! pg_up; then
  echo "services: PostgreSQL is down, starting it"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    for v in $(ls /etc/postgresql 2>/dev/null); do pg_ctlcluster --skip-systemctl-redirect "$v" main start || true; done
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
  echo "services: FAILED: PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started" >&2
  exit 1
fi

if ! redis_up; then
  echo "services: Redis is down, starting it"
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "services: FAILED: Redis is not reachable on 127.0.0.1:6379 and could not be started" >&2
  exit 1
fi

# The role the suite connects as (trust auth): postgres, created if this server only has root.
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U root -d postgres -c 'CREATE ROLE postgres SUPERUSER LOGIN' >/dev/null 2>&1 || true
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1 || {
  echo "services: FAILED: cannot connect to PostgreSQL as user postgres" >&2; exit 1; }
# The default database of the test settings (benchmarks and manage.py with tradebot.settings.test use it; the
# suite itself runs in pytest-django's test_* copy).
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname='tradebot'")" != "1" ]; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE tradebot' || {
    echo "services: FAILED: cannot create database tradebot" >&2; exit 1; }
fi
echo "services: PostgreSQL and Redis are up"
