#!/usr/bin/env bash
# Side-by-side benchmark: every scenario against every system, back to back, on this machine,
# with the same client (onlychat-loadgen). Writes JSON reports to $OUT and docs/benchmarks.md.
#
#   bench/run.sh                      default size (fits in about ten minutes on 2 cores)
#   BENCH_SIZE=full bench/run.sh      the issue's sizes: 19,000 idle sockets, 20 x 900 broadcast
#   BENCH_SYSTEMS="raw onlychat-standalone" BENCH_SCENARIOS="idle broadcast" bench/run.sh
#   BENCH_OUT (bench/results/$BENCH_SIZE) and BENCH_DOC (docs/benchmarks.md) say where results go.
#
# Systems: raw (bench/raw-server, the machine's limit), onlychat-standalone, onlychat-cluster
# (2 nodes + Kafka + Redis), centrifugo, sockudo, socketio; the *-cluster forms of the peers run
# two instances joined through Redis and are used for the cluster scenario.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SIZE=${BENCH_SIZE:-default}
OUT=${BENCH_OUT:-$ROOT/bench/results/$SIZE}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}
RUN_DIR=$(mktemp -d /tmp/onlychat-bench.XXXXXX)
SECRET=${BENCH_JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123456789}
export BENCH_JWT_SECRET=$SECRET
LOADGEN=$ROOT/target/release/onlychat-loadgen
ONLYCHAT=$ROOT/target/release/onlychat
# The bench's own Redis, PostgreSQL and Kafka, apart from the tests' instances.
export ONLYCHAT_SVC_DIR=$RUN_DIR/services ONLYCHAT_SVC_REDIS_PORT=36379 ONLYCHAT_SVC_PG_PORT=35432 \
  ONLYCHAT_SVC_KAFKA_PORT=39092 ONLYCHAT_SVC_KAFKA_CONTROLLER_PORT=39093
REDIS_URL=redis://127.0.0.1:36379
KAFKA=127.0.0.1:39092
PORT_A=38080 PORT_B=38081

SYSTEMS=${BENCH_SYSTEMS:-raw onlychat-standalone onlychat-cluster centrifugo sockudo socketio}
SCENARIOS=${BENCH_SCENARIOS:-idle broadcast broadcast-peak dm reconnect-storm login-storm cluster}

case $SIZE in
  default) IDLE=5000 ROOMS=20 MEMBERS=200 RATE=500 PEAK=2500 PAIRS=500 DM_RATE=1000 STORM=2000 LOGINS=300 DUR=10s ;;
  full) IDLE=19000 ROOMS=20 MEMBERS=900 RATE=200 PEAK=1000 PAIRS=2000 DM_RATE=4000 STORM=10000 LOGINS=1000 DUR=20s ;;
  *) echo "run.sh: BENCH_SIZE is default or full" >&2; exit 2 ;;
esac
CL_ROOMS=100 CL_MEMBERS=20 CL_RATE=1000

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/services.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
log() { printf '== %s\n' "$*" >&2; }

wait_http() { # URL: until it answers 200 (30 s)
  for _ in $(seq 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "run.sh: $1 did not become ready" >&2; return 1
}
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  PIDS=()
}

# start SYSTEM: starts it, sets URLS, SERVER_PIDS and PEER.
start() {
  local sys=$1
  URLS= SERVER_PIDS= PEER=
  case $sys in
    onlychat-standalone)
      rm -rf "$RUN_DIR/standalone"
      "$ONLYCHAT" standalone --listen 127.0.0.1:$PORT_A --data-dir "$RUN_DIR/standalone" \
        --jwt-secret "$SECRET" --send-rate 0 --max-connections 0 --max-rooms 0 \
        --login-rate-user 0 --login-rate-ip 0 >"$RUN_DIR/standalone.log" 2>&1 &
      PIDS+=($!); SERVER_PIDS=$!; PEER=onlychat; URLS=ws://127.0.0.1:$PORT_A
      wait_http http://127.0.0.1:$PORT_A/readyz ;;
    onlychat-cluster)
      local topic=bench.$RANDOM$RANDOM pids=() port
      for port in $PORT_A $PORT_B; do
        "$ONLYCHAT" node --listen 127.0.0.1:$port --redis-url $REDIS_URL --kafka-brokers $KAFKA \
          --kafka-topic "$topic" --jwt-secret "$SECRET" --send-rate 0 --max-connections 0 \
          --max-rooms 0 >"$RUN_DIR/node-$port.log" 2>&1 &
        PIDS+=($!); pids+=($!)
      done
      SERVER_PIDS=$(IFS=,; echo "${pids[*]}"); PEER=onlychat
      URLS=ws://127.0.0.1:$PORT_A,ws://127.0.0.1:$PORT_B
      wait_http http://127.0.0.1:$PORT_A/readyz; wait_http http://127.0.0.1:$PORT_B/readyz ;;
    raw | centrifugo | sockudo | socketio)
      SERVER_PIDS=$(bench/peers.sh start "$sys" --port $PORT_A --log "$RUN_DIR/$sys.log")
      PIDS+=("$SERVER_PIDS"); URLS=ws://127.0.0.1:$PORT_A
      case $sys in raw) PEER=raw ;; centrifugo) PEER=centrifugo ;; sockudo) PEER=pusher ;; socketio) PEER=socketio ;; esac ;;
    centrifugo-cluster | sockudo-cluster | socketio-cluster)
      local base=${sys%-cluster} a b
      a=$(bench/peers.sh start "$base" --port $PORT_A --redis-url $REDIS_URL --log "$RUN_DIR/$sys-a.log")
      b=$(bench/peers.sh start "$base" --port $PORT_B --redis-url $REDIS_URL --log "$RUN_DIR/$sys-b.log")
      PIDS+=("$a" "$b"); SERVER_PIDS=$a,$b
      URLS=ws://127.0.0.1:$PORT_A,ws://127.0.0.1:$PORT_B
      case $base in centrifugo) PEER=centrifugo ;; sockudo) PEER=pusher ;; socketio) PEER=socketio ;; esac ;;
    *) echo "run.sh: unknown system $sys" >&2; return 2 ;;
  esac
}

# measure SYSTEM SCENARIO LOADGEN-ARGS...: one loadgen run, its JSON kept in $OUT.
measure() {
  local sys=$1 scenario=$2; shift 2
  local file=$OUT/$sys.$scenario.json
  log "$sys: $scenario"
  echo "onlychat-loadgen --peer $PEER --url $URLS --label $sys $*" >"$OUT/$sys.$scenario.cmd"
  if ! "$LOADGEN" --json --peer "$PEER" --url "$URLS" --jwt-secret "$SECRET" --label "$sys" \
      --server-pid "$SERVER_PIDS" "$@" >"$file.tmp" 2>"$OUT/$sys.$scenario.err"; then
    echo "run.sh: $sys $scenario failed: $(tail -n 3 "$OUT/$sys.$scenario.err")" >&2
    rm -f "$file.tmp"; return 0
  fi
  mv "$file.tmp" "$file"
}

run_system() {
  local sys=$1 scenario
  for scenario in $SCENARIOS; do
    [[ $scenario == cluster ]] && continue
    [[ $scenario == login-storm && $sys != onlychat-* ]] && continue
    [[ $scenario != login-storm || $sys == onlychat-standalone ]] || continue
    start "$sys"
    case $scenario in
      idle) measure "$sys" idle --duration 5s idle --connections $IDLE ;;
      broadcast) measure "$sys" broadcast --duration $DUR broadcast --rooms $ROOMS --members $MEMBERS --rate $RATE ;;
      broadcast-peak) measure "$sys" broadcast-peak --duration $DUR --drain 10s broadcast --rooms $ROOMS --members $MEMBERS --rate $PEAK ;;
      dm) measure "$sys" dm --duration $DUR dm --pairs $PAIRS --rate $DM_RATE ;;
      reconnect-storm) measure "$sys" reconnect-storm --duration 30s reconnect-storm --clients $STORM ;;
      login-storm) measure "$sys" login-storm --duration 60s login-storm --clients $LOGINS ;;
    esac
    stop_all
  done
}

run_cluster() {
  local sys=$1
  start "$sys"
  measure "$sys" cluster --duration $DUR broadcast --rooms $CL_ROOMS --members $CL_MEMBERS --rate $CL_RATE
  stop_all
}

log "build"
cargo build --release --locked -p onlychat -p onlychat-loadgen -p onlychat-raw-server >&2
mkdir -p "$OUT"
needs_services=
for sys in $SYSTEMS; do
  case $sys in raw | onlychat-*) ;; *) bench/peers.sh install "$sys" >&2 ;; esac
  [[ $sys == onlychat-cluster || ( $sys != raw && $SCENARIOS == *cluster* ) ]] && needs_services=1
done
if [[ -n $needs_services ]]; then
  log "services"
  scripts/services.sh up redis kafka >&2
fi
began=$SECONDS
for sys in $SYSTEMS; do
  [[ $sys == onlychat-cluster ]] || run_system "$sys"
  if [[ $SCENARIOS == *cluster* ]]; then
    case $sys in
      raw | onlychat-standalone) ;;
      onlychat-cluster) run_system "$sys"; run_cluster onlychat-cluster ;;
      *) run_cluster "$sys-cluster" ;;
    esac
  elif [[ $sys == onlychat-cluster ]]; then
    run_system "$sys"
  fi
done
log "measured in $((SECONDS - began)) s"
python3 bench/report.py "$OUT" --size "$SIZE" >"$DOC"
log "wrote $DOC"
