#!/usr/bin/env bash
# Peer servers the onlychat benchmark compares against, plus a raw reference server, all on
# loopback. See bench/peers/README.md for the wire protocol of each.
#
#   bench/peers.sh install NAME            NAME in: centrifugo sockudo socketio raw (idempotent)
#   bench/peers.sh start NAME --port P [--redis-url redis://127.0.0.1:PORT] [--log FILE]
#                                          starts one instance on 127.0.0.1:P in the background,
#                                          waits until it accepts connections, prints its PID
#   bench/peers.sh stop PID...             SIGTERM, then SIGKILL after 10 s
#   bench/peers.sh versions                pinned version of each peer, one per line
#   bench/peers.sh smoke NAME|all          two authenticated clients, one room, one publish;
#                                          single instance, then (not raw) two instances + Redis
#
# Environment:
#   BENCH_JWT_SECRET      HS256 secret for connection JWTs (centrifugo, socketio); required by start
#   ONLYCHAT_BENCH_CACHE  install/run dir (default $HOME/.cache/onlychat/bench)
#   BENCH_START_TIMEOUT   seconds start waits for the port (default 60)
#   BENCH_PING_S          server heartbeat interval in seconds (default: each peer's own, 25 s
#                         for centrifugo/socketio, 120 s pusher activity timeout for sockudo);
#                         the smoke check sets it low to see the pings
set -euo pipefail

# ---- pinned versions ------------------------------------------------------------------------
CENTRIFUGO_VERSION="v6.9.1"
SOCKUDO_VERSION="5.2.0"
SOCKUDO_FEATURES="redis,kafka"        # on top of the default features (local, v2, opentelemetry)
SOCKETIO_VERSION="4.8.4"              # resolved in bench/peers/socketio/package-lock.json
SOCKETIO_REDIS_ADAPTER_VERSION="8.3.0"
RAW_VERSION="0.1.0"                   # onlychat-raw-server, bench/raw-server (workspace version)
# ----------------------------------------------------------------------------------------------

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
CACHE="${ONLYCHAT_BENCH_CACHE:-$HOME/.cache/onlychat/bench}"
RUN_ROOT="$CACHE/run"
START_TIMEOUT="${BENCH_START_TIMEOUT:-60}"
PEERS=(centrifugo sockudo socketio raw)

CENTRIFUGO_BIN="$CACHE/centrifugo/bin/centrifugo"
SOCKUDO_BIN="$CACHE/sockudo/bin/sockudo"
SOCKETIO_DIR="$CACHE/socketio"
SMOKE_DIR="$CACHE/smoke"
# raw is built in the workspace's own target dir, where bench/run.sh builds it too.
RAW_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/raw-server"

die() { echo "peers.sh: $*" >&2; exit 1; }
log() { echo "peers.sh: $*" >&2; }

check_name() {
  local n="$1"
  for p in "${PEERS[@]}"; do [[ "$p" == "$n" ]] && return 0; done
  die "unknown peer '$n' (expected one of: ${PEERS[*]})"
}

timed() { # timed LABEL CMD...: runs CMD, logs its duration
  local label="$1" t0 rc=0
  shift
  t0=$(date +%s)
  "$@" || rc=$?
  log "$label took $(( $(date +%s) - t0 )) s (exit $rc)"
  return "$rc"
}

# ---- install ---------------------------------------------------------------------------------

install_centrifugo() {
  if [[ -x "$CENTRIFUGO_BIN" ]] && "$CENTRIFUGO_BIN" version 2>/dev/null | grep -q "Centrifugo ${CENTRIFUGO_VERSION} "; then
    return 0
  fi
  command -v go >/dev/null || die "go is not installed (needed to build Centrifugo)"
  mkdir -p "$CACHE/centrifugo/bin"
  log "building Centrifugo $CENTRIFUGO_VERSION (go install)"
  # The version ldflag is what the release build sets; without it `centrifugo version` says 0.0.0.
  timed "go install centrifugo" env GOBIN="$CACHE/centrifugo/bin" CGO_ENABLED=0 nice -n 10 \
    go install -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=${CENTRIFUGO_VERSION#v}" \
    "github.com/centrifugal/centrifugo/v6@${CENTRIFUGO_VERSION}"
}

install_sockudo() {
  local stamp="$CACHE/sockudo/.installed"
  local want="sockudo $SOCKUDO_VERSION features=$SOCKUDO_FEATURES"
  if [[ -x "$SOCKUDO_BIN" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  # Build prerequisites (Debian packages):
  #   protobuf-compiler     protoc, for sockudo's protobuf code generation
  #   cmake, g++            librdkafka (kafka feature: rdkafka "cmake-build")
  #   libcurl4-openssl-dev  only the header: librdkafka 2.12.1's rdkafka_conf.c does
  #                         `#ifdef WITH_OAUTHBEARER_OIDC` on a macro its CMake config always
  #                         defines (to 0), so it includes <curl/curl.h> even without curl
  local pkgs=()
  command -v protoc >/dev/null || pkgs+=(protobuf-compiler)
  command -v cmake >/dev/null || pkgs+=(cmake)
  command -v g++ >/dev/null || pkgs+=(g++)
  [[ -f /usr/include/x86_64-linux-gnu/curl/curl.h || -f /usr/include/curl/curl.h ]] || pkgs+=(libcurl4-openssl-dev)
  if [[ ${#pkgs[@]} -gt 0 ]]; then
    log "installing ${pkgs[*]} (apt-get; needed to build sockudo)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null \
      || { "${sudo[@]}" apt-get update -q >/dev/null \
           && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null; } \
      || die "apt-get install ${pkgs[*]} failed"
  fi
  log "building sockudo $SOCKUDO_VERSION with features $SOCKUDO_FEATURES (long: ~25-40 min on 2 cores)"
  # A persistent --target-dir makes a retry after an interrupted build incremental.
  timed "cargo install sockudo" nice -n 10 cargo install sockudo --locked --version "$SOCKUDO_VERSION" \
    --features "$SOCKUDO_FEATURES" --root "$CACHE/sockudo" --target-dir "$CACHE/sockudo-target"
  echo "$want" > "$stamp"
}

npm_ci_into() { # npm_ci_into SRC_DIR DEST_DIR: copy package files, npm ci when the lock changed
  local src="$1" dest="$2"
  mkdir -p "$dest"
  if [[ -d "$dest/node_modules" ]] && cmp -s "$src/package-lock.json" "$dest/package-lock.json" \
     && cmp -s "$src/package.json" "$dest/package.json"; then
    return 0
  fi
  command -v npm >/dev/null || die "npm is not installed"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  (cd "$dest" && timed "npm ci ($dest)" npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2)
}

install_socketio() {
  npm_ci_into "$BENCH_DIR/peers/socketio" "$SOCKETIO_DIR"
}

install_raw() {
  # Always runs cargo (a no-op build takes a second or two) so the binary follows the source.
  (cd "$REPO_DIR" && nice -n 10 cargo build --release -p onlychat-raw-server --quiet) ||
    die "raw-server build failed"
}

install_smoke_deps() {
  npm_ci_into "$BENCH_DIR/peers/smoke" "$SMOKE_DIR"
}

cmd_install() {
  [[ $# -ge 1 ]] || die "usage: peers.sh install NAME"
  local name
  for name in "$@"; do
    if [[ "$name" == all ]]; then cmd_install "${PEERS[@]}"; continue; fi
    check_name "$name"
    "install_$name"
    log "$name installed"
  done
}

# ---- start / stop ----------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

raise_nofile() {
  local hard
  hard=$(ulimit -Hn)
  ulimit -Sn "$hard" 2>/dev/null || true
}

# redis://[user:pass@]host:port[/db]  ->  REDIS_HOST REDIS_PORT REDIS_DB
parse_redis_url() {
  local url="$1" rest
  [[ "$url" == redis://* ]] || die "--redis-url must look like redis://127.0.0.1:PORT (got '$url')"
  rest="${url#redis://}"
  rest="${rest##*@}"
  REDIS_DB=0
  if [[ "$rest" == */* ]]; then REDIS_DB="${rest#*/}"; REDIS_DB="${REDIS_DB:-0}"; rest="${rest%%/*}"; fi
  REDIS_HOST="${rest%%:*}"
  REDIS_PORT="${rest##*:}"
  [[ "$REDIS_PORT" =~ ^[0-9]+$ && "$REDIS_HOST" != "$rest" ]] || die "--redis-url needs an explicit port (got '$url')"
}

write_centrifugo_config() { # FILE PORT REDIS_URL
  local file="$1" port="$2" redis_url="$3" engine ping="${BENCH_PING_S:-25}" pong
  pong=$(( ping > 2 ? ping * 3 / 5 : 1 ))
  if [[ -n "$redis_url" ]]; then
    engine="\"type\": \"redis\", \"redis\": { \"address\": [\"$redis_url\"], \"prefix\": \"bench-centrifugo\" }"
  else
    engine="\"type\": \"memory\""
  fi
  # v6 key names (checked against internal/configtypes in the v6.9.1 module source and
  # `centrifugo defaultconfig`). The HMAC secret comes from the environment
  # (CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY), never from this file.
  cat > "$file" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $port },
  "log": { "level": "warn" },
  "engine": { $engine },
  "node": { "name": "bench-$port" },
  "client": {
    "allowed_origins": ["*"],
    "ping_interval": "${ping}s",
    "pong_timeout": "${pong}s",
    "queue_max_size": 67108864,
    "channel_limit": 1024,
    "connection_limit": 0,
    "user_connection_limit": 0,
    "connection_rate_limit": 0
  },
  "channel": {
    "without_namespace": {
      "allow_subscribe_for_client": true,
      "allow_publish_for_subscriber": true,
      "presence": false,
      "join_leave": false,
      "history_size": 0,
      "history_ttl": "0s",
      "force_recovery": false,
      "allow_recovery": false,
      "force_positioning": false,
      "channel_regex": "^[A-Za-z0-9-]+$"
    }
  },
  "websocket": { "write_timeout": "10s", "message_size_limit": 65536 },
  "http_api": { "disabled": true },
  "admin": { "enabled": false },
  "prometheus": { "enabled": false },
  "health": { "enabled": true },
  "usage_stats": { "disabled": true }
}
EOF
}

write_sockudo_config() { # FILE PORT REDIS_URL
  local file="$1" port="$2" redis_url="$3" adapter activity="${BENCH_PING_S:-120}"
  if [[ -n "$redis_url" ]]; then
    parse_redis_url "$redis_url"
    # Kafka instead of Redis (the binary is built with the kafka feature):
    #   "adapter": { "driver": "kafka", "fallback_to_local": false,
    #                "kafka": { "brokers": ["127.0.0.1:9092"], "prefix": "bench-sockudo" } }
    # (env equivalents: ADAPTER_DRIVER=kafka, KAFKA_BROKERS=127.0.0.1:9092)
    adapter="\"driver\": \"redis\", \"fallback_to_local\": false,
    \"redis\": { \"prefix\": \"bench-sockudo\",
               \"redis_pub_options\": { \"url\": \"$redis_url\" },
               \"redis_sub_options\": { \"url\": \"$redis_url\" } }"
  else
    REDIS_HOST=127.0.0.1 REDIS_PORT=6379 REDIS_DB=0
    adapter="\"driver\": \"local\""
  fi
  # Field names from sockudo-core 5.2.0 src/options (ServerOptions, AppSerde). JSON is the
  # "legacy" format sockudo still reads (sonic_rs); `${VAR}` in it would be env-substituted.
  cat > "$file" <<EOF
{
  "host": "127.0.0.1",
  "port": $port,
  "debug": false,
  "mode": "production",
  "activity_timeout": $activity,
  "max_connections": 0,
  "shutdown_grace_period": 2,
  "websocket_max_payload_kb": 64,
  "app_manager": {
    "driver": "memory",
    "array": {
      "apps": [
        {
          "id": "bench",
          "key": "bench-key",
          "secret": "bench-secret",
          "enabled": true,
          "max_connections": 0,
          "enable_client_messages": true,
          "max_client_events_per_second": 0,
          "max_event_payload_in_kb": 64
        }
      ]
    }
  },
  "adapter": { $adapter },
  "database": { "redis": { "host": "$REDIS_HOST", "port": $REDIS_PORT, "db": $REDIS_DB } },
  "cache": { "driver": "memory" },
  "queue": { "driver": "none" },
  "rate_limiter": { "enabled": false },
  "metrics": { "enabled": false },
  "idempotency": { "enabled": false },
  "connection_recovery": { "enabled": false },
  "history": { "enabled": false },
  "http_api": { "usage_enabled": false },
  "websocket": { "max_messages": 1024, "disconnect_on_buffer_full": true },
  "logging": { "colors_enabled": false, "include_target": true }
}
EOF
}

cmd_start() {
  [[ $# -ge 1 ]] || die "usage: peers.sh start NAME --port P [--redis-url URL] [--log FILE]"
  local name="$1" port="" redis_url="" logfile=""
  shift
  check_name "$name"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --port) port="${2:-}"; shift 2 ;;
      --redis-url) redis_url="${2:-}"; shift 2 ;;
      --log) logfile="${2:-}"; shift 2 ;;
      *) die "start: unknown argument '$1'" ;;
    esac
  done
  [[ "$port" =~ ^[0-9]+$ ]] || die "start: --port P is required"
  [[ -n "$redis_url" ]] && parse_redis_url "$redis_url"
  if port_open "$port"; then die "start: 127.0.0.1:$port is already in use"; fi

  local run="$RUN_ROOT/$name-$port"
  mkdir -p "$run"
  logfile="${logfile:-$run/server.log}"
  mkdir -p "$(dirname "$logfile")"
  : > "$logfile"
  raise_nofile

  # Each peer runs with a clean environment (env -i) so stray variables (HOST, PORT,
  # REDIS_URL, CENTRIFUGO_*, ...) that these servers read cannot change the setup.
  local base_env=(env -i "PATH=$PATH" "HOME=$HOME" "LANG=C.UTF-8")
  local -a cmd
  case "$name" in
    centrifugo)
      [[ -x "$CENTRIFUGO_BIN" ]] || die "centrifugo is not installed: run bench/peers.sh install centrifugo"
      [[ -n "${BENCH_JWT_SECRET:-}" ]] || die "BENCH_JWT_SECRET is not set"
      write_centrifugo_config "$run/config.json" "$port" "$redis_url"
      # --strict: an unknown (e.g. pre-v6) key name is an error, not a silently ignored key.
      "${base_env[@]}" "$CENTRIFUGO_BIN" checkconfig --strict -c "$run/config.json" >"$run/checkconfig.err" 2>&1 \
        || die "centrifugo rejected $run/config.json: $(cat "$run/checkconfig.err")"
      cmd=("${base_env[@]}" "CENTRIFUGO_CLIENT_TOKEN_HMAC_SECRET_KEY=$BENCH_JWT_SECRET"
           "$CENTRIFUGO_BIN" -c "$run/config.json")
      ;;
    sockudo)
      [[ -x "$SOCKUDO_BIN" ]] || die "sockudo is not installed: run bench/peers.sh install sockudo"
      write_sockudo_config "$run/config.json" "$port" "$redis_url"
      # sockudo silently falls back to its defaults (0.0.0.0:6001) on a config it cannot read,
      # before its logger is up; at least catch a syntax error here.
      if command -v python3 >/dev/null; then
        python3 -m json.tool "$run/config.json" >/dev/null 2>"$run/config.err" \
          || die "generated $run/config.json is not valid JSON: $(cat "$run/config.err")"
      fi
      cmd=("${base_env[@]}" "RUST_LOG=${RUST_LOG:-warn}" "$SOCKUDO_BIN" --config "$run/config.json")
      ;;
    socketio)
      [[ -d "$SOCKETIO_DIR/node_modules" ]] || die "socketio is not installed: run bench/peers.sh install socketio"
      [[ -n "${BENCH_JWT_SECRET:-}" ]] || die "BENCH_JWT_SECRET is not set"
      cmd=("${base_env[@]}" "NODE_PATH=$SOCKETIO_DIR/node_modules" "BENCH_JWT_SECRET=$BENCH_JWT_SECRET"
           "NODE_OPTIONS=${NODE_OPTIONS:-}" "BENCH_PING_S=${BENCH_PING_S:-}"
           node "$BENCH_DIR/peers/socketio/server.js" --host 127.0.0.1 --port "$port")
      [[ -n "$redis_url" ]] && cmd+=(--redis-url "$redis_url")
      ;;
    raw)
      [[ -x "$RAW_BIN" ]] || die "raw is not installed: run bench/peers.sh install raw"
      [[ -z "$redis_url" ]] || die "raw has no cluster mode (no --redis-url)"
      cmd=("${base_env[@]}" "$RAW_BIN" --listen "127.0.0.1:$port")
      ;;
  esac

  # cwd = run dir: sockudo also looks for ./config/config.{toml,json}, which must not exist there.
  local pid
  pid=$(cd "$run" && { setsid "${cmd[@]}" >>"$logfile" 2>&1 </dev/null & echo $!; })
  echo "$pid" > "$run/pid"

  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  while ! port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name on port $port exited during start-up; last log lines ($logfile):"
      tail -n 30 "$logfile" >&2
      exit 1
    fi
    if (( $(date +%s) >= deadline )); then
      log "$name on port $port did not accept connections within ${START_TIMEOUT}s; last log lines ($logfile):"
      tail -n 30 "$logfile" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  echo "$pid"
}

cmd_stop() {
  local pid i
  for pid in "$@"; do
    [[ "$pid" =~ ^[0-9]+$ ]] || die "stop: not a PID: $pid"
    kill "$pid" 2>/dev/null || continue
    for (( i = 0; i < 100; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  done
}

cmd_versions() {
  echo "centrifugo $CENTRIFUGO_VERSION"
  echo "sockudo $SOCKUDO_VERSION (features: default + $SOCKUDO_FEATURES)"
  echo "socketio socket.io@$SOCKETIO_VERSION @socket.io/redis-adapter@$SOCKETIO_REDIS_ADAPTER_VERSION"
  echo "raw onlychat-raw-server $RAW_VERSION"
}

# ---- smoke -----------------------------------------------------------------------------------

free_port() { # free_port START: first port >= START not listening
  local p="$1"
  while port_open "$p"; do p=$(( p + 1 )); done
  echo "$p"
}

url_for() { # url_for NAME PORT
  case "$1" in
    centrifugo) echo "ws://127.0.0.1:$2/connection/websocket" ;;
    sockudo) echo "ws://127.0.0.1:$2/app/bench-key?protocol=7&client=bench&version=1" ;;
    socketio) echo "ws://127.0.0.1:$2/socket.io/?EIO=4&transport=websocket" ;;
    raw) echo "ws://127.0.0.1:$2/ws" ;;
  esac
}

SMOKE_PIDS=()
SMOKE_REDIS_PID=""
smoke_cleanup() {
  [[ ${#SMOKE_PIDS[@]} -gt 0 ]] && cmd_stop "${SMOKE_PIDS[@]}"
  SMOKE_PIDS=()
  if [[ -n "$SMOKE_REDIS_PID" ]]; then cmd_stop "$SMOKE_REDIS_PID"; SMOKE_REDIS_PID=""; fi
}

smoke_one() {
  local name="$1" out="$RUN_ROOT/smoke"
  mkdir -p "$out"
  cmd_install "$name"
  install_smoke_deps
  export BENCH_JWT_SECRET="${BENCH_JWT_SECRET:-smoke-secret-$$}"
  export BENCH_PING_S="${BENCH_PING_S:-3}"
  trap smoke_cleanup EXIT

  local p1 p2 pid
  p1=$(free_port 27100)
  log "smoke $name: single instance on $p1"
  pid=$(cmd_start "$name" --port "$p1" --log "$out/$name-single.log")
  SMOKE_PIDS+=("$pid")
  NODE_PATH="$SMOKE_DIR/node_modules" node "$BENCH_DIR/peers/smoke/smoke.js" \
    --peer "$name" --url-a "$(url_for "$name" "$p1")" --url-b "$(url_for "$name" "$p1")" \
    --transcript "$out/$name-single.frames" \
    || { log "smoke $name (single) FAILED; server log: $out/$name-single.log"; exit 1; }
  smoke_cleanup

  if [[ "$name" != raw ]]; then
    local rport redis_bin
    redis_bin="$(command -v redis-server || echo /usr/bin/redis-server)"
    [[ -x "$redis_bin" ]] || die "redis-server not found (apt-get install redis-server)"
    rport=$(free_port 26379)
    setsid "$redis_bin" --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
      >"$out/redis-$rport.log" 2>&1 </dev/null &
    SMOKE_REDIS_PID=$!
    local i
    for (( i = 0; i < 100; i++ )); do port_open "$rport" && break; sleep 0.1; done
    port_open "$rport" || die "redis-server did not start on $rport"
    p1=$(free_port 27100)
    pid=$(cmd_start "$name" --port "$p1" --redis-url "redis://127.0.0.1:$rport" --log "$out/$name-cluster-1.log")
    SMOKE_PIDS+=("$pid")
    p2=$(free_port $(( p1 + 1 )))
    pid=$(cmd_start "$name" --port "$p2" --redis-url "redis://127.0.0.1:$rport" --log "$out/$name-cluster-2.log")
    SMOKE_PIDS+=("$pid")
    log "smoke $name: cluster on $p1 + $p2 through redis://127.0.0.1:$rport"
    NODE_PATH="$SMOKE_DIR/node_modules" node "$BENCH_DIR/peers/smoke/smoke.js" \
      --peer "$name" --url-a "$(url_for "$name" "$p1")" --url-b "$(url_for "$name" "$p2")" \
      --transcript "$out/$name-cluster.frames" \
      || { log "smoke $name (cluster) FAILED; server logs: $out/$name-cluster-{1,2}.log"; exit 1; }
    smoke_cleanup
  fi
  trap - EXIT
  log "smoke $name: OK (frames in $out/$name-*.frames)"
}

cmd_smoke() {
  [[ $# -ge 1 ]] || die "usage: peers.sh smoke NAME|all"
  local name
  for name in "$@"; do
    if [[ "$name" == all ]]; then cmd_smoke "${PEERS[@]}"; continue; fi
    check_name "$name"
    smoke_one "$name"
  done
}

# ---- main ------------------------------------------------------------------------------------

[[ $# -ge 1 ]] || { sed -n '2,22p' "$0" >&2; exit 2; }
sub="$1"
shift
case "$sub" in
  install) cmd_install "$@" ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  versions) cmd_versions ;;
  smoke) cmd_smoke "$@" ;;
  -h|--help|help) sed -n '2,22p' "$0" ;;
  *) die "unknown command '$sub' (install, start, stop, versions, smoke)" ;;
esac
