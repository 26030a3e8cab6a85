#!/usr/bin/env bash
# The growth curve of a profiles sync (issue 16), measured as a user runs klsync: whole processes.
#
#   bash benches/growth.sh 100000 1000000        # row counts; default: 100000 1000000
#
# For each row count N: a fresh PostgreSQL table of N customers (email + one property; vacuumed,
# as autovacuum would leave it, so the first reads set no hint bits for anyone), a fresh
# release `klsync-emulator` at Klaviyo's published limits (jobs done 50 ms after they are posted,
# twice: queued, then processing), and a project with one `profiles:` sync. Then:
#   1. the first apply (`klsync apply --auto-approve`): wall time and peak RSS (GNU time), beside
#      the pacing bound: ceil(N / 10,000) jobs at Klaviyo's 150 a minute (10 a second burst) plus
#      their polls;
#   2. the no-op plan, 5 times (`klsync plan`), against `psql -c "\copy (SELECT ...) TO /dev/null"`
#      of the same query, 5 times, interleaved: medians and the plan's peak RSS.
# Prints one Markdown row per N. Needs PostgreSQL (KLSYNC_TEST_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432/test), psql and /usr/bin/time; builds the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
PG="${KLSYNC_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
SIZES=("${@:-100000 1000000}")
[ $# -eq 0 ] && SIZES=(100000 1000000)
cargo build --release --quiet -p klsync -p klsync-emulator
BIN="${CARGO_TARGET_DIR:-target}/release"
WORK="$(mktemp -d)"
PORT=18799
trap 'kill $EMU 2>/dev/null || true; psql -q "$PG" -c "DROP SCHEMA IF EXISTS klsync_growth CASCADE" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
QUERY="SELECT email, plan FROM klsync_growth.customers"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { # wall seconds of a command, output discarded
  local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
echo "| rows | first apply | pacing bound | first apply peak RSS | no-op plan (median of 5) | psql \\copy (median of 5) | ratio | no-op plan peak RSS |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for N in "${SIZES[@]}"; do
  psql -q "$PG" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP SCHEMA IF EXISTS klsync_growth CASCADE;
CREATE SCHEMA klsync_growth;
CREATE TABLE klsync_growth.customers AS
  SELECT 'c' || i || '@example.com' AS email, (ARRAY['free','silver','gold'])[1 + i % 3] AS plan
  FROM generate_series(1, $N) AS i;
VACUUM ANALYZE klsync_growth.customers;
SQL
  rm -rf "$WORK/project" "$WORK/state.db"; mkdir -p "$WORK/project"
  cat > "$WORK/project/klsync.yaml" <<YAML
version: 1
database:
  statement_timeout_seconds: 3600
YAML
  cat > "$WORK/project/shop.yaml" <<YAML
profiles:
  - id: customers
    query: customers
    identify_by: email
    properties:
      shop_plan: plan
queries:
  customers:
    sql: $QUERY
YAML
  "$BIN/klsync-emulator" --listen "127.0.0.1:$PORT" --rate-limits real --job-delay 50ms >"$WORK/emulator.log" 2>&1 &
  EMU=$!
  sleep 0.5
  export KLAVIYO_API_KEY=pk_emulator KLAVIYO_BASE_URL="http://127.0.0.1:$PORT" DATABASE_URL="$PG"
  export KLSYNC_STATE_URL="sqlite://$WORK/state.db?mode=rwc"
  /usr/bin/time -f "%e %M" -o "$WORK/apply.time" "$BIN/klsync" apply --auto-approve --dir "$WORK/project" >"$WORK/apply.log" 2>&1 \
    || { cat "$WORK/apply.log" >&2; exit 1; }
  read -r apply_s apply_kib < "$WORK/apply.time"
  jobs=$(( (N + 9999) / 10000 ))
  # 10 a second for the first second, then 150 a minute; each job polled at least once.
  bound=$(echo "if ($jobs <= 10) 0 else ($jobs - 10) * 60 / 150" | bc -l)
  plans=(); copies=(); plan_kib=0
  for _ in 1 2 3 4 5; do
    copies+=("$(seconds psql -q "$PG" -c "\\copy ($QUERY) TO '/dev/null'")")
    /usr/bin/time -f "%e %M" -o "$WORK/plan.time" "$BIN/klsync" plan --detailed-exitcode --dir "$WORK/project" >"$WORK/plan.log" 2>&1 \
      || { cat "$WORK/plan.log" >&2; exit 1; }
    read -r plan_s kib < "$WORK/plan.time"
    plans+=("$plan_s"); [ "$kib" -gt "$plan_kib" ] && plan_kib=$kib
  done
  plan_med=$(printf '%s\n' "${plans[@]}" | median)
  copy_med=$(printf '%s\n' "${copies[@]}" | median)
  printf '| %s | %.1f s | ≥ %.0f s | %d MB | %.2f s | %.2f s | %.2fx | %d MB |\n' \
    "$N" "$apply_s" "$bound" $((apply_kib / 1024)) "$plan_med" "$copy_med" \
    "$(echo "$plan_med / $copy_med" | bc -l)" $((plan_kib / 1024))
  kill $EMU; wait $EMU 2>/dev/null || true
done
