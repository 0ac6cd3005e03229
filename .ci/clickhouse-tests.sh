#!/usr/bin/env bash
# ClickHouse tests: starts the private server (.ci/clickhouse.sh), runs the storage-clickhouse tests (and the
# collector's ClickHouse-mode tests when present) against it with FV_CLICKHOUSE_URL set, runs the modern-ClickHouse
# check (.ci/chdb.sh), and stops the server whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
# Its own instance (own dir and ports), so it neither reuses nor stops a developer's or a benchmark's server.
CREATED_DIR=""
if [ -z "${FV_CH_DIR:-}" ]; then
  FV_CH_DIR="$(mktemp -d /tmp/fv-clickhouse-ci.XXXXXX)"
  CREATED_DIR="$FV_CH_DIR"
fi
export FV_CH_DIR
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Free ports unless given: concurrent runs on one machine must not meet on a fixed port.
export FV_CH_HTTP_PORT="${FV_CH_HTTP_PORT:-$(free_port)}" FV_CH_TCP_PORT="${FV_CH_TCP_PORT:-$(free_port)}"
trap 'bash .ci/clickhouse.sh stop; if [ -n "$CREATED_DIR" ]; then rm -rf "$CREATED_DIR"; fi' EXIT
FV_CLICKHOUSE_URL="$(bash .ci/clickhouse.sh start)"
export FV_CLICKHOUSE_URL
echo "clickhouse at $FV_CLICKHOUSE_URL ($(curl -fsS "$FV_CLICKHOUSE_URL/?query=SELECT%20version()"))"
# Under CI=true the tests fail rather than skip if the URL is missing; set it here so they always run.
export CI="${CI:-true}"
cargo test -p storage-clickhouse
# The collector in ClickHouse mode (its black-box tests run the built binary too).
cargo build -p collector --bins
cargo test -p blackbox-tests --test clickhouse_mode
bash .ci/chdb.sh
