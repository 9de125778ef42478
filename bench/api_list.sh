#!/usr/bin/env bash
# bench/api_list.sh [sqlite|postgres]: `GET /api/calls?limit=50` latency with many calls stored.
# Starts a release relay on an empty database (which runs the migrations), stops it, stores
# BENCH_API_CALLS call records (100000) straight into the `calls` table with SQL, starts the relay
# again and times BENCH_API_REQUESTS (2000) requests over one keep-alive connection after 200 of
# warm-up. Prints p50/p99/max in ms. PostgreSQL: a scratch database on BENCH_DATABASE_URL
# (postgres://postgres@127.0.0.1:5432/postgres), dropped afterwards. RELAY_BIN and BENCH_OUT as in
# bench/lib.sh. Target (issue 13): p99 <= 20 ms on both engines.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENGINE="${1:-sqlite}"
CALLS="${BENCH_API_CALLS:-100000}"
REQUESTS="${BENCH_API_REQUESTS:-2000}"
FAKE_PORT=9 # no call is placed: the upstream is never dialled
SCRATCH_DB=""
BASE_URL="${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

drop_scratch() {
  if [[ -n "$SCRATCH_DB" ]]; then psql -q "$BASE_URL" -c "DROP DATABASE IF EXISTS $SCRATCH_DB WITH (FORCE)" >/dev/null || true; fi
}
trap 'cleanup; drop_scratch' EXIT
trap 'exit 130' INT TERM
build

case "$ENGINE" in
  sqlite) export DATABASE_URL="sqlite://$OUT/api-list.db" ;;
  postgres)
    SCRATCH_DB="bench_api_list_$$"
    psql -q "$BASE_URL" -c "CREATE DATABASE $SCRATCH_DB" >/dev/null
    export DATABASE_URL="${BASE_URL%/*}/$SCRATCH_DB"
    ;;
  *) log "engine must be sqlite or postgres"; exit 2 ;;
esac
export API_TOKEN="bench-api-token"

start_relay
stop_relay
log "storing $CALLS call records ($ENGINE)"
python3 - "$ENGINE" "$DATABASE_URL" "$CALLS" <<'PY'
import datetime, json, subprocess, sys
engine, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
def row(i):
    at = start + datetime.timedelta(seconds=30 * i)
    end = at + datetime.timedelta(seconds=60)
    sid = f"CA{i:032x}"
    record = {"call_sid": sid, "direction": "inbound" if i % 3 else "outbound-api",
              "from": f"+1555{i % 10_000_000:07d}", "to": "+15550000000", "status": "completed",
              "started_at": at.isoformat().replace("+00:00", "Z"),
              "ended_at": end.isoformat().replace("+00:00", "Z"), "duration_s": 60,
              "end_reason": "caller_hung_up"}
    ms = lambda t: int(t.timestamp() * 1000)
    return (sid, "bench", "completed", 1, ms(at), ms(end), None, json.dumps(record))
rows = [row(i) for i in range(n)]
if engine == "sqlite":
    import sqlite3
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    db.executemany("INSERT INTO calls (call_sid, instance_id, status, ended, started_at, ended_at, last_sequence, record) VALUES (?,?,?,?,?,?,?,?)", rows)
    db.commit()
else:
    copy = "\n".join("\t".join("\\N" if v is None else str(v).replace("\\", "\\\\") for v in r) for r in rows)
    subprocess.run(["psql", "-q", url, "-c", "COPY calls (call_sid, instance_id, status, ended, started_at, ended_at, last_sequence, record) FROM STDIN"],
                   input=copy + "\n", text=True, check=True)
    subprocess.run(["psql", "-q", url, "-c", "ANALYZE calls"], check=True)
PY
start_relay
python3 - "$RELAY_PORT" "$API_TOKEN" "$REQUESTS" "$ENGINE" "$CALLS" <<'PY'
import http.client, json, sys, time
port, token, n, engine, stored = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
def once():
    t = time.perf_counter()
    conn.request("GET", "/api/calls?limit=50", headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse(); body = r.read()
    took = (time.perf_counter() - t) * 1000
    assert r.status == 200, (r.status, body[:200])
    calls = json.loads(body)["calls"]
    assert len(calls) == 50 and calls[0]["call_sid"] > calls[-1]["call_sid"], "newest first"
    return took
for _ in range(200): once()
times = sorted(once() for _ in range(n))
q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
print(f"| {engine} | {stored} | {n} | {q(0.5):.2f} | {q(0.99):.2f} | {times[-1]:.2f} |")
PY
