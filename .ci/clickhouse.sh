#!/usr/bin/env bash
# A private ClickHouse server for tests and benchmarks: `bash .ci/clickhouse.sh start|stop|url|status`.
#
# It never touches the system instance: its own config.xml/users.xml, data under ${FV_CH_DIR:-/tmp/fv-clickhouse},
# loopback-only ports (HTTP ${FV_CH_HTTP_PORT:-18123}, native ${FV_CH_TCP_PORT:-19000}, no interserver port).
# `start` is idempotent (a running instance is reused) and prints the HTTP URL once `SELECT 1` answers.
#
# Users (loopback only; fixed passwords because this instance is private to one test run):
#   default    admin, no password (runs migrations and creates the per-test databases)
#   fv_writer  password fv-writer: may INSERT/SELECT but no DDL (allow_ddl=0) - what a collector needs
#   fv_reader  password fv-reader: read-only (readonly=2: may send query settings, never write)
# On ClickHouse 18.16 users.xml has no per-table grants; docs/clickhouse.md shows the modern CREATE USER ... GRANT form.
set -euo pipefail

DIR="${FV_CH_DIR:-/tmp/fv-clickhouse}"
HTTP_PORT="${FV_CH_HTTP_PORT:-18123}"
TCP_PORT="${FV_CH_TCP_PORT:-19000}"
URL="http://127.0.0.1:${HTTP_PORT}"
PIDFILE="$DIR/server.pid"

server_bin() {
  for b in /usr/sbin/clickhouse-server /usr/bin/clickhouse-server "$(command -v clickhouse-server 2>/dev/null || true)"; do
    if [ -n "$b" ] && [ -x "$b" ]; then echo "$b"; return 0; fi
  done
  return 1
}

ensure_installed() {
  if server_bin >/dev/null; then return 0; fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # apt's progress goes to stderr: `start` prints only the URL on stdout, and callers capture it
  # (FV_CLICKHOUSE_URL="$(bash .ci/clickhouse.sh start)"); on a fresh machine apt's output once became the URL.
  if ! $sudo apt-get install -y clickhouse-server clickhouse-client >&2; then
    $sudo apt-get update >&2
    $sudo apt-get install -y clickhouse-server clickhouse-client >&2
  fi
  # Debian's package may start the system instance on 8123/9000; ours uses other ports, so it does not matter.
  server_bin >/dev/null
}

# Answers, and is ours: another server on the same port (another run's) has another instance id.
answers() {
  local want got
  want="$(cat "$DIR/instance" 2>/dev/null)" || return 1
  got="$(curl -fsS --max-time 2 "$URL/" --data-binary \
    "SELECT substitution FROM system.macros WHERE macro = 'fv_instance'" 2>/dev/null)" || return 1
  [ -n "$want" ] && [ "$got" = "$want" ]
}

running_pid() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid="$(cat "$PIDFILE")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; return 0; fi
  fi
  return 1
}

write_config() {
  mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$DIR/log"
  cat /proc/sys/kernel/random/uuid >"$DIR/instance"
  cat >"$DIR/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$DIR/log/server.log</log>
        <errorlog>$DIR/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <max_connections>512</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>$DIR/data/</path>
    <tmp_path>$DIR/tmp/</tmp_path>
    <user_files_path>$DIR/user_files/</user_files_path>
    <format_schema_path>$DIR/format_schemas/</format_schema_path>
    <users_config>$DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
    <macros><fv_instance>$(cat "$DIR/instance")</fv_instance></macros>
</yandex>
XML
  cat >"$DIR/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
        <fv_writer>
            <max_memory_usage>2000000000</max_memory_usage>
            <allow_ddl>0</allow_ddl>
        </fv_writer>
        <fv_reader>
            <max_memory_usage>2000000000</max_memory_usage>
            <readonly>2</readonly>
            <allow_ddl>0</allow_ddl>
        </fv_reader>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <fv_writer>
            <password>fv-writer</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>fv_writer</profile>
            <quota>default</quota>
        </fv_writer>
        <fv_reader>
            <password>fv-reader</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>fv_reader</profile>
            <quota>default</quota>
        </fv_reader>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

start() {
  if running_pid >/dev/null && answers; then echo "$URL"; return 0; fi
  ensure_installed
  local bin
  bin="$(server_bin)"
  if running_pid >/dev/null; then
    # Started but not answering yet (or wedged): give it the normal wait below.
    :
  else
    write_config
    # The server must not run as a user that cannot write the data dir; we own it, so run as ourselves.
    nohup "$bin" --config-file="$DIR/config.xml" >"$DIR/log/stdout.log" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  local i
  for i in $(seq 1 120); do
    # Our process must be alive (another server answering on the port is not ours: fail rather than use it).
    if ! running_pid >/dev/null; then
      echo "clickhouse-server exited (port $HTTP_PORT or $TCP_PORT taken?); last log lines:" >&2
      tail -n 30 "$DIR/log/stdout.log" "$DIR/log/server.err.log" >&2 2>/dev/null || true
      return 1
    fi
    if answers; then echo "$URL"; return 0; fi
    sleep 0.5
  done
  echo "clickhouse-server did not answer SELECT 1 within 60 s" >&2
  return 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  status) if running_pid >/dev/null && answers; then echo "running at $URL"; else echo "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|url|status" >&2; exit 2 ;;
esac
