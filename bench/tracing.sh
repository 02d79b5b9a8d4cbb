#!/usr/bin/env bash
# What exporting traces costs, and what a dead collector costs: the same broadcast load against a
# release-built standalone node three ways, back to back: traces off; OTLP endpoint that accepts
# connections and never answers (a hung collector); OTLP endpoint with a real Jaeger taking every
# span. Prints one table (send-to-deliver p50/p99, server RSS after the run, lost).
#
#   bench/tracing.sh                       20 rooms x 200 members, 500 msg/s (100k deliveries/s), 10 s
#   TRACE_BENCH_RATE=100 bench/tracing.sh  another send rate
# Needs target/release/{onlychat,onlychat-loadgen} (cargo build --release -p onlychat -p onlychat-loadgen)
# and Jaeger (scripts/observability.sh install).
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RATE=${TRACE_BENCH_RATE:-500} ROOMS=20 MEMBERS=200 DUR=${TRACE_BENCH_DURATION:-10s}
PORT=38180 SECRET=bench-secret-bench-secret-bench-secret-0123456789
RUN_DIR=$(mktemp -d /tmp/onlychat-trace-bench.XXXXXX)
export ONLYCHAT_OBS_DIR=$RUN_DIR/obs ONLYCHAT_JAEGER_OTLP_PORT=38318 ONLYCHAT_JAEGER_GRPC_PORT=38317 \
  ONLYCHAT_JAEGER_QUERY_PORT=38686 ONLYCHAT_JAEGER_QUERY_GRPC_PORT=38685 ONLYCHAT_JAEGER_METRICS_PORT=38888
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/observability.sh down --clean >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# A collector that accepts and never answers.
python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 38319)); s.listen(1024); time.sleep(86400)' &
PIDS+=($!)
scripts/observability.sh start-jaeger >/dev/null

run() { # LABEL [ENV...]: one standalone, one loadgen run; prints a table row
  local label=$1; shift
  rm -rf "$RUN_DIR/data"
  env "$@" target/release/onlychat standalone --listen 127.0.0.1:$PORT --data-dir "$RUN_DIR/data" \
    --jwt-secret "$SECRET" --send-rate 0 --max-connections 0 --max-rooms 0 >"$RUN_DIR/$label.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 300); do curl -fsS -o /dev/null http://127.0.0.1:$PORT/readyz 2>/dev/null && break; sleep 0.1; done
  target/release/onlychat-loadgen --json --peer onlychat --url ws://127.0.0.1:$PORT --jwt-secret "$SECRET" \
    --server-pid $pid --duration "$DUR" broadcast --rooms $ROOMS --members $MEMBERS --rate "$RATE" \
    >"$RUN_DIR/$label.json" 2>"$RUN_DIR/$label.err"
  python3 - "$label" "$RUN_DIR/$label.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
lat = r.get("latency_ms") or r.get("latency") or {}
rss = r.get("server_rss") or {}
def g(d, *k):
    for x in k:
        if x in d: return d[x]
    return float("nan")
print(f"| {sys.argv[1]} | {g(lat,'p50','p50_ms'):.2f} | {g(lat,'p99','p99_ms'):.2f} | "
      f"{rss.get('after_kib', 0)/1024:.1f} | {r.get('lost', r.get('counts', {}).get('lost', 'n/a'))} |")
PY
  kill -TERM $pid; wait $pid 2>/dev/null || true
}

echo "broadcast $ROOMS x $MEMBERS, $RATE msg/s for $DUR (release standalone, $(nproc) cores shared with the load generator)"
echo
echo "| traces | p50 ms | p99 ms | server RSS after, MiB | lost |"
echo "|---|---:|---:|---:|---:|"
run off
run "hung collector" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:38319
run "Jaeger" OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:38318 OTEL_SERVICE_NAME=onlychat-bench
# The Jaeger row means something only if the spans arrived.
if curl -fsS "http://127.0.0.1:38686/api/services" | grep -q onlychat-bench; then
  echo; echo "Jaeger received the run's spans (service onlychat-bench)."
else
  echo "tracing.sh: Jaeger has no spans from onlychat-bench" >&2; exit 1
fi
