#!/usr/bin/env bash
# Makes sure the services the test suite talks to are installed and running on this
# machine: MariaDB (127.0.0.1:3306, root, empty password), PostgreSQL (127.0.0.1:5432,
# trust) and Redis (127.0.0.1:6379). It checks each, starts it if it is installed but
# stopped, installs it with apt-get if absent, and fails loudly if it still does not
# answer. Sourced by scripts/test; safe to run on its own.
set -euo pipefail

say() { printf '[services] %s\n' "$*" >&2; }
die() { say "FATAL: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  return 1
}

mariadb_up() { mariadb -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; }
ensure_mariadb() {
  if mariadb_up; then say "MariaDB is running"; return; fi
  local fresh=""
  if [ ! -x /usr/sbin/mariadbd ]; then apt_install mariadb-server mariadb-client; fresh=1; fi
  say "starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB 60 $SUDO mariadb -uroot -e 'SELECT 1' || die "MariaDB did not start"
  if ! mariadb_up; then
    # A fresh Debian install lets root in through the unix socket only: allow an empty
    # password over TCP as well, as on the development machines.
    say "allowing root with an empty password over TCP"
    $SUDO mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
  fi
  [ -n "$fresh" ] && $SUDO mariadb -uroot -e 'CREATE DATABASE IF NOT EXISTS test' || true
  mariadb_up || die "MariaDB does not accept root over 127.0.0.1:3306"
}

postgres_up() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; }
ensure_postgres() {
  if postgres_up; then say "PostgreSQL is running"; return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql postgresql-client; fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    say "allowing trust auth from 127.0.0.1 in $hba"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for PostgreSQL 60 postgres_up || die "PostgreSQL does not answer on 127.0.0.1:5432"
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
ensure_redis() {
  if redis_up; then say "Redis is running"; return; fi
  if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
  say "starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 30 redis_up || die "Redis does not answer on 127.0.0.1:6379"
}

ensure_clients() {
  command -v mariadb >/dev/null || apt_install mariadb-client
  command -v psql >/dev/null || apt_install postgresql-client
  command -v redis-cli >/dev/null || apt_install redis-tools
}

# The reverse proxies the forward-authentication tests put in front of an app. They
# only run from the tests' own temporary directories: the packages' services must not
# start (and take port 80) on install, so a policy-rc.d says no while apt-get runs.
ensure_proxies() {
  local missing=()
  [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v caddy >/dev/null || missing+=(caddy)
  [ ${#missing[@]} -eq 0 ] && return 0
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"; made=1
  fi
  apt_install "${missing[@]}"
  if [ "$made" = 1 ]; then $SUDO rm -f "$policy"; fi
  [ -x /usr/sbin/nginx ] || die "nginx is not installed"
  command -v caddy >/dev/null || die "caddy is not installed"
}

ensure_clients
ensure_proxies
ensure_mariadb
ensure_postgres
ensure_redis
