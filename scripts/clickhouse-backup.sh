#!/usr/bin/env bash
# Backup and restore of fieldvitals' ClickHouse database with ALTER TABLE … FREEZE (works on 18.16 and modern servers).
#
#   scripts/clickhouse-backup.sh backup  --database DB    --to DIR   [common options]
#   scripts/clickhouse-backup.sh restore --database NEWDB --from DIR [common options]
#
# Common options:
#   --url URL               the server's HTTP interface (default http://127.0.0.1:8123)
#   --user USER             a user allowed to FREEZE / CREATE / ATTACH (default: default)
#   --password-file FILE    its password (or CLICKHOUSE_PASSWORD in the environment; never on the command line)
#   --clickhouse-path DIR   the server's <path> (default /var/lib/clickhouse/): run this on the ClickHouse host
#
# backup: saves every table's CREATE statement, freezes each MergeTree table (hard links of its parts, a consistent
#   snapshot per table taken without stopping writes), copies the frozen parts to DIR/data/<table>/, removes the
#   shadow copy, and writes DIR/manifest.tsv (table, engine, rows in the copied parts).
# restore: creates NEWDB (it must not hold tables), creates the tables (materialized views last, so attaching parts
#   does not feed them twice: ATTACH PART never fires a view), copies the parts into each table's detached/ directory,
#   ATTACHes them, and checks every table's row count against the manifest. Restore into a new name, compare, then
#   switch collectors to it with --clickhouse-database.
set -euo pipefail

usage() { sed -n '2,19p' "$0" >&2; exit 2; }
die() { echo "clickhouse-backup: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
CMD="$1"; shift
URL="http://127.0.0.1:8123"; CH_USER="default"; PASSWORD="${CLICKHOUSE_PASSWORD:-}"; CH_PATH="/var/lib/clickhouse/"
DB=""; DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --url) URL="$2"; shift 2 ;;
    --user) CH_USER="$2"; shift 2 ;;
    --password-file) PASSWORD="$(cat "$2")"; shift 2 ;;
    --clickhouse-path) CH_PATH="${2%/}/"; shift 2 ;;
    --database) DB="$2"; shift 2 ;;
    --to|--from) DIR="$2"; shift 2 ;;
    *) usage ;;
  esac
done
[ -n "$DB" ] && [ -n "$DIR" ] || usage
[[ "$DB" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--database: '$DB' is not a plain identifier"
[ -d "$CH_PATH" ] || die "--clickhouse-path: $CH_PATH is not a directory (run this on the ClickHouse host)"

# One query over HTTP; the password goes in a header, never in the URL or the process list.
q() {
  local out
  if ! out="$(curl -sS --fail-with-body -H "X-ClickHouse-User: $CH_USER" -H "X-ClickHouse-Key: $PASSWORD" \
      "$URL/" --data-binary "$1" 2>&1)"; then
    die "query failed: ${1:0:120}…: $out"
  fi
  printf '%s' "$out"
}

# A table's directory relative to the server path (data/<db>/<t>/ on 18.16, store/…/<uuid>/ on Atomic databases).
table_dir() {
  local p
  p="$(q "SELECT arrayElement(data_paths, 1) FROM system.tables WHERE database = '$1' AND name = '$2' FORMAT TSVRaw" 2>/dev/null)" \
    || p="$(q "SELECT data_path FROM system.tables WHERE database = '$1' AND name = '$2' FORMAT TSVRaw")"
  [ -n "$p" ] || die "no data path for $1.$2"
  case "$p" in "$CH_PATH"*) echo "${p#"$CH_PATH"}" ;; *) die "$1.$2 lives in $p, outside --clickhouse-path $CH_PATH" ;; esac
}

backup() {
  [ ! -e "$DIR" ] || [ -z "$(ls -A "$DIR")" ] || die "--to: $DIR is not empty"
  mkdir -p "$DIR/schema" "$DIR/data"
  printf '%s\n' "$DB" > "$DIR/database.txt"
  : > "$DIR/manifest.tsv"
  local tables
  tables="$(q "SELECT name, engine FROM system.tables WHERE database = '$DB' ORDER BY name FORMAT TSVRaw")"
  [ -n "$tables" ] || die "database $DB has no tables"
  while IFS=$'\t' read -r t engine; do
    q "SHOW CREATE TABLE $DB.$t FORMAT TSVRaw" > "$DIR/schema/$t.sql"
    local rows=0
    if [[ "$engine" == *MergeTree ]]; then
      local rel n src
      rel="$(table_dir "$DB" "$t")"
      q "ALTER TABLE $DB.$t FREEZE" >/dev/null
      n="$(cat "$CH_PATH/shadow/increment.txt")"
      src="$CH_PATH/shadow/$n/$rel"
      mkdir -p "$DIR/data/$t"
      if [ -d "$src" ]; then
        for part in "$src"/*/; do
          [ -f "$part/count.txt" ] || continue
          cp -a "$part" "$DIR/data/$t/"
          rows=$((rows + $(cat "$part/count.txt")))
        done
      fi
      rm -rf "${CH_PATH:?}/shadow/$n"
    fi
    printf '%s\t%s\t%s\n' "$t" "$engine" "$rows" >> "$DIR/manifest.tsv"
    echo "backed up $DB.$t ($engine): $rows rows"
  done <<< "$tables"
}

restore() {
  [ -f "$DIR/manifest.tsv" ] || die "--from: $DIR has no manifest.tsv"
  local old
  old="$(cat "$DIR/database.txt")"
  q "CREATE DATABASE IF NOT EXISTS $DB" >/dev/null
  [ "$(q "SELECT count() FROM system.tables WHERE database = '$DB' FORMAT TSVRaw")" = 0 ] \
    || die "database $DB already holds tables: restore into a new name"
  # Tables first, views last; the statements name the old database, which becomes the new one.
  local t engine rows
  for pass in tables views; do
    while IFS=$'\t' read -r t engine rows; do
      if { [ "$pass" = tables ] && [ "$engine" = MaterializedView ]; } || { [ "$pass" = views ] && [ "$engine" != MaterializedView ]; }; then
        continue
      fi
      # The `Merge` table names its database as a string argument, not as a prefix.
      sed -E -e "s/(^|[^A-Za-z0-9_\`])\`?$old\`?\./\1$DB./g" -e "s/Merge\('$old',/Merge('$DB',/" "$DIR/schema/$t.sql" \
        | q "$(cat)" >/dev/null
    done < "$DIR/manifest.tsv"
  done
  while IFS=$'\t' read -r t engine rows; do
    [[ "$engine" == *MergeTree ]] || continue
    local dest owner
    dest="$CH_PATH$(table_dir "$DB" "$t")"
    mkdir -p "$dest/detached"
    owner="$(stat -c %u:%g "$dest")"
    for part in "$DIR/data/$t"/*/; do
      [ -d "$part" ] || continue
      local name
      name="$(basename "$part")"
      cp -a "$part" "$dest/detached/$name"
      chown -R "$owner" "$dest/detached/$name"
      q "ALTER TABLE $DB.$t ATTACH PART '$name'" >/dev/null
    done
    local got
    got="$(q "SELECT count() FROM $DB.$t FORMAT TSVRaw")"
    # A Summing/Aggregating table may merge rows after attach; the parts' counts are an upper bound there.
    if [ "$engine" = MergeTree ]; then
      [ "$got" = "$rows" ] || die "$DB.$t has $got rows after restore, the backup holds $rows"
    fi
    echo "restored $DB.$t ($engine): $got rows"
  done < "$DIR/manifest.tsv"
}

case "$CMD" in
  backup) backup ;;
  restore) restore ;;
  *) usage ;;
esac
