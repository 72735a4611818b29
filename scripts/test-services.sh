#!/usr/bin/env bash
# What the test suite needs, installed when missing and started when not running: Redis
# (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432, database `test`, trust auth for 127.0.0.1),
# openssl and Python grpcio (the TLS tests' certificates and their client that is not ours),
# plus make, a C compiler and root certificates. `make test` and `.ci/run` both run it, so
# a fresh machine passes the README's second command as it stands.
#
# Honours REDIS_URL and DATABASE_URL when set: those services are used as they are.
# Installing needs root (apt-get); starting needs nothing more than the packages.
set -euo pipefail

log() { printf '== %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "needs root to run: $*" >&2
    exit 1
  fi
}

need_apt=()
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The servers' binaries even with REDIS_URL / DATABASE_URL set: tests/store_tls.rs starts a
# TLS-only redis-server and PostgreSQL of its own.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  need_apt+=(postgresql)
fi
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_apt+=(ca-certificates)
# The grpcio client of tests/tls.rs runs on Debian's python3 (where the package installs).
if ! /usr/bin/python3 -c 'import grpc' >/dev/null 2>&1; then need_apt+=(python3-grpcio); fi
# The browser suite (tests/browser.rs): Debian's headless Chromium, its driver and Selenium.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if ! /usr/bin/python3 -c 'import selenium' >/dev/null 2>&1; then need_apt+=(python3-selenium); fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ -z "${REDIS_URL:-}" ]; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    log "starting redis on 127.0.0.1:6379"
    dir=${TMPDIR:-/tmp}/iysgate-redis
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "$dir" --logfile "$dir/redis.log"
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null
fi

if [ -z "${DATABASE_URL:-}" ]; then
  pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_hba=/etc/postgresql/$pg_version/main/pg_hba.conf
  pg_ctl() { as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main "$@"; }
  # The Debian package makes the `main` cluster; a host configured not to needs one.
  [ -f "$pg_hba" ] || as_root pg_createcluster "$pg_version" main
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting postgresql $pg_version"
    pg_ctl start
    for _ in $(seq 100); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.1; done
  fi
  if ! as_root grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$pg_hba"; then
    log "trusting 127.0.0.1 in $pg_hba"
    # The first matching line wins: put it before the installed host rules.
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$pg_hba"
    pg_ctl reload
    sleep 0.5
  fi
  if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
    log "creating database test"
    createdb -h 127.0.0.1 -U postgres test
  fi
  psql -h 127.0.0.1 -U postgres -d test -tAc 'SELECT 1' >/dev/null
fi
log "services ready: redis ${REDIS_URL:-redis://127.0.0.1:6379}, postgres ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
