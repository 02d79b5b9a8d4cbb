#!/usr/bin/env bash
# Jaeger (traces, OTLP in) and Prometheus (metrics, scraping) on 127.0.0.1 for onlychat's tests and
# local runs. No Docker: Jaeger v2 is built from the Go module proxy, Prometheus is Debian's package.
#
#   scripts/observability.sh install          build/install both once (pinned; cached outside the repo)
#   scripts/observability.sh start-jaeger     in-memory Jaeger; wait until it takes spans and answers queries
#   scripts/observability.sh stop-jaeger
#   scripts/observability.sh start-prometheus --target HOST:PORT [--target ...] [--targets-file FILE] [--no-scrape-wait]
#   scripts/observability.sh stop-prometheus
#   scripts/observability.sh status | down [--clean]   (down stops both; --clean deletes the state dir)
#   eval "$(scripts/observability.sh env)"    ONLYCHAT_JAEGER_* / ONLYCHAT_PROMETHEUS_* variables
#
# start-* first stops a leftover of ours (stale pid file, or one of our processes still holding a
# port); a port held by anything else is an error naming that process. Nothing binds 0.0.0.0.
# start-prometheus scrapes HOST:PORT/metrics every second; a targets file has one HOST:PORT a line
# (# comments allowed). It returns once every target has been scraped (up or down), ~6s: Prometheus
# hands targets to its scrapers only after 5s; --no-scrape-wait returns at /-/ready (~0.2s) instead.
# Its TSDB is throwaway: wiped on every start and stop.
#
# Overrides: ONLYCHAT_TOOLS_DIR (~/.cache/onlychat/tools: the Jaeger build module and bin/jaeger),
#   ONLYCHAT_OBS_DIR (/tmp/onlychat-observability: configs, pid files, logs, TSDB),
#   ONLYCHAT_JAEGER_OTLP_PORT (34318, OTLP/HTTP), ONLYCHAT_JAEGER_GRPC_PORT (34317, OTLP/gRPC),
#   ONLYCHAT_JAEGER_QUERY_PORT (36686, query HTTP API; the UI is not built in), ONLYCHAT_JAEGER_QUERY_GRPC_PORT (36685),
#   ONLYCHAT_JAEGER_METRICS_PORT (34888, Jaeger's own /metrics), ONLYCHAT_PROMETHEUS_PORT (39090),
#   ONLYCHAT_PROMETHEUS_SCRAPE_INTERVAL (1s), ONLYCHAT_OBS_WAIT (60 seconds to become ready),
#   ONLYCHAT_JAEGER_BIN, ONLYCHAT_PROMETHEUS_BIN (use these binaries instead).
# shellcheck disable=SC2015,SC2016 # "A && B || die" is meant (die when either fails); 'bash -c' bodies expand later
set -Eeuo pipefail

TOOLS=${ONLYCHAT_TOOLS_DIR:-$HOME/.cache/onlychat/tools}
DIR=${ONLYCHAT_OBS_DIR:-/tmp/onlychat-observability}
OTLP_PORT=${ONLYCHAT_JAEGER_OTLP_PORT:-34318}
GRPC_PORT=${ONLYCHAT_JAEGER_GRPC_PORT:-34317}
QUERY_PORT=${ONLYCHAT_JAEGER_QUERY_PORT:-36686}
QUERY_GRPC_PORT=${ONLYCHAT_JAEGER_QUERY_GRPC_PORT:-36685}
JMETRICS_PORT=${ONLYCHAT_JAEGER_METRICS_PORT:-34888}
PROM_PORT=${ONLYCHAT_PROMETHEUS_PORT:-39090}
SCRAPE_INTERVAL=${ONLYCHAT_PROMETHEUS_SCRAPE_INTERVAL:-1s}
WAIT=${ONLYCHAT_OBS_WAIT:-60}

# Pinned versions. The Go module v1.75.0 is the same release as Jaeger v2.12.0 (the collector-based
# `jaeger` binary); v2 is tagged v1.x in Go because its module path has no /v2.
JAEGER_MOD=github.com/jaegertracing/jaeger
JAEGER_MOD_VERSION=v1.75.0
JAEGER_V2_VERSION=v2.12.0
JAEGER_BIN=${ONLYCHAT_JAEGER_BIN:-$TOOLS/bin/jaeger}
# Debian 12's package; a later Debian rebuild of the same upstream 2.42.0 is accepted (see prom_install).
PROM_DEB_VERSION=2.42.0+ds-5+deb12u1
PROM_UPSTREAM=2.42.0
PROM_BIN=${ONLYCHAT_PROMETHEUS_BIN:-/usr/bin/prometheus}
PROMTOOL_BIN=$(dirname "$PROM_BIN")/promtool

SVC=observability # the tool being worked on, named in every error
APT_UPDATED=
MARK=ONLYCHAT_OBSERVABILITY # in the environment of every process we start: how a leftover is recognized

trap '((BASH_SUBSHELL)) || echo "observability.sh: $SVC: command failed (exit $?): $BASH_COMMAND" >&2' ERR
die() { echo "observability.sh: $SVC: $*" >&2; exit 1; }
# die_log FILE MESSAGE: the one-line error, then the tail of the log.
die_log() { echo "observability.sh: $SVC: $2" >&2; [[ -f $1 ]] && tail -n 25 "$1" | sed 's/^/  | /' >&2; exit 1; }
since() { awk -v a="${1/,/.}" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1fs", b - a }'; }

# pid_alive PIDFILE PATTERN: prints the pid if that process lives and its command line has PATTERN.
pid_alive() {
  local p
  [[ -s $1 ]] && p=$(head -n1 "$1") && [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$2" && echo "$p"
}

# stop_one PID TIMEOUT: SIGTERM, wait, then SIGKILL. Prints what happened.
stop_one() {
  local i
  kill -TERM "$1" 2>/dev/null || return 0
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || { echo "$SVC: stopped (pid $1)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  echo "$SVC: killed (pid $1) after ${2}s without exiting on SIGTERM"
}

# port_pid PORT: the pid of the process listening on TCP PORT (any address), if any.
port_pid() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
ours() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -q "^$MARK="; }
owner_dir() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n "s/^$MARK=//p" | head -n1; }
describe() { printf 'pid %s (%s)' "$1" "$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | cut -c1-160)"; }

# free_ports PORT...: a leftover of ours on one of them is stopped; anything else there is an error.
# Ours and a leftover: started by this script with this state dir, or with a state dir that is gone
# or whose pid file no longer names it (an orphan nobody can stop). One that another state dir still
# manages (a concurrent test or bench on the same ports) is left alone: an error names its dir.
free_ports() {
  local port p i odir
  command -v ss >/dev/null || die "ss (iproute2) is needed to check the ports: apt-get install iproute2"
  for port in "$@"; do
    port_in_use "$port" || continue
    p=$(port_pid "$port")
    [[ -n $p ]] || die "127.0.0.1:$port is taken by a process this user cannot see; choose other ports (see the script's header)"
    ours "$p" || die "127.0.0.1:$port is taken by $(describe "$p"), not ours; stop it or choose other ports (see the script's header)"
    odir=$(owner_dir "$p")
    if [[ $odir != "$DIR" ]] && grep -qsx "$p" "$odir/jaeger/jaeger.pid" "$odir/prometheus/prometheus.pid"; then
      die "127.0.0.1:$port is taken by $(describe "$p"), started with ONLYCHAT_OBS_DIR=$odir, which still manages it;" \
        "stop it (ONLYCHAT_OBS_DIR=$odir scripts/observability.sh down) or choose other ports (see the script's header)"
    fi
    echo "$SVC: a leftover of ours holds 127.0.0.1:$port: stopping $(describe "$p")"
    stop_one "$p" 15 >/dev/null
    for ((i = 0; i < 50; i++)); do port_in_use "$port" || break; sleep 0.1; done
    port_in_use "$port" && die "127.0.0.1:$port is still taken after stopping pid $p"
  done
  return 0
}

# launch NAME LOG CMD...: starts CMD detached (own session) with the marker in its environment;
# the pid file $DIR/NAME/NAME.pid names CMD itself.
launch() {
  local name=$1 log=$2; shift 2
  rm -f "$DIR/$name/$name.pid"
  (cd "$DIR/$name" && exec env "$MARK=$DIR" nohup setsid bash -c 'echo $$ >"$0.pid"; exec "$@"' "$name" "$@" \
    >"$log" 2>&1 </dev/null &)
}

# wait_ready NAME PATTERN LOG PROBE...: until every PROBE passes; dies if the process exits first.
wait_ready() {
  local name=$1 pat=$2 log=$3 end=$((SECONDS + WAIT)) probe ok; shift 3
  while :; do
    ok=1
    for probe in "$@"; do $probe >/dev/null 2>&1 || { ok=; break; }; done
    [[ $ok ]] && return 0
    ((SECONDS < end)) || die_log "$log" "not ready after ${WAIT}s (failing check: $probe); log: $log"
    [[ ! -s $DIR/$name/$name.pid ]] || pid_alive "$DIR/$name/$name.pid" "$pat" >/dev/null ||
      die_log "$log" "exited during startup; log: $log"
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  ((EUID == 0)) || die "$* missing; install it (apt-get install $*) or run this script as root"
  command -v apt-get >/dev/null || die "$* missing and there is no apt-get to install it"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300) log=$TOOLS/logs/apt.log
  echo "$SVC: installing $* (apt-get, log $log)"
  if [[ -z $APT_UPDATED ]] && ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    "${apt[@]}" update >>"$log" 2>&1 || die_log "$log" "apt-get update failed"
    APT_UPDATED=1
  fi
  "${apt[@]}" install --no-install-recommends --allow-downgrades "$@" >>"$log" 2>&1 && return 0
  [[ -z $APT_UPDATED ]] || die_log "$log" "apt-get install $* failed"
  APT_UPDATED=1 # the package lists may be stale: refresh once and retry
  "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install --no-install-recommends --allow-downgrades "$@" >>"$log" 2>&1 ||
    die_log "$log" "apt-get install $* failed"
}

# ---------------------------------------------------------------- install
# The stamp says which module version and flags built bin/jaeger; a different one is rebuilt.
JAEGER_LDFLAGS="-s -w -X $JAEGER_MOD/internal/version.latestVersion=$JAEGER_V2_VERSION"
JAEGER_STAMP="$JAEGER_MOD/cmd/jaeger@$JAEGER_MOD_VERSION ldflags=$JAEGER_LDFLAGS trimpath cgo=0"

jaeger_install() {
  SVC=jaeger
  local t0=$EPOCHREALTIME mod=$TOOLS/src/jaeger-$JAEGER_MOD_VERSION log=$TOOLS/logs/jaeger-build.log gover tmp
  local stamp=$TOOLS/bin/jaeger.stamp
  if [[ -n ${ONLYCHAT_JAEGER_BIN:-} ]]; then
    [[ -x $JAEGER_BIN ]] || die "ONLYCHAT_JAEGER_BIN=$JAEGER_BIN is not an executable"
    echo "jaeger: using ONLYCHAT_JAEGER_BIN=$JAEGER_BIN (not built)"; return 0
  fi
  if [[ -x $JAEGER_BIN && -f $stamp && $(<"$stamp") == "$JAEGER_STAMP" ]]; then
    echo "jaeger: $JAEGER_V2_VERSION already built ($JAEGER_BIN)"; return 0
  fi
  command -v go >/dev/null || die "go is not installed; Jaeger $JAEGER_V2_VERSION is built from source and needs Go >= 1.24"
  gover=$(go env GOVERSION)
  echo "jaeger: building $JAEGER_MOD/cmd/jaeger@$JAEGER_MOD_VERSION (= $JAEGER_V2_VERSION) with $gover;" \
    "a cold build takes several minutes on 2 cores (log $log)"
  # A throwaway module that only requires Jaeger, so its dependencies resolve to Jaeger's own go.mod.
  export GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GO111MODULE=on
  mkdir -p "$mod"
  if ! grep -qs "^tool $JAEGER_MOD/cmd/jaeger\$" "$mod/go.mod" || ! grep -qs "$JAEGER_MOD $JAEGER_MOD_VERSION" "$mod/go.mod"; then
    rm -f "$mod/go.mod" "$mod/go.sum"
    (cd "$mod" && go mod init onlychat.local/tools/jaeger && go get -tool "$JAEGER_MOD/cmd/jaeger@$JAEGER_MOD_VERSION") \
      >>"$log" 2>&1 || die_log "$log" "go get -tool $JAEGER_MOD/cmd/jaeger@$JAEGER_MOD_VERSION failed"
  fi
  echo "jaeger: sources resolved in $(since "$t0"), compiling"
  rm -f "$TOOLS"/bin/.jaeger.* # what an interrupted build left
  tmp=$TOOLS/bin/.jaeger.$$
  (cd "$mod" && go build -ldflags="$JAEGER_LDFLAGS" -o "$tmp" "$JAEGER_MOD/cmd/jaeger") >>"$log" 2>&1 ||
    { rm -f "$tmp"; die_log "$log" "go build of $JAEGER_MOD/cmd/jaeger failed"; }
  "$tmp" version >>"$log" 2>&1 || { rm -f "$tmp"; die_log "$log" "the built jaeger does not run ('jaeger version' failed)"; }
  mv -f "$tmp" "$JAEGER_BIN"
  echo "$JAEGER_STAMP" >"$stamp"
  echo "jaeger: built $JAEGER_BIN ($(du -m "$JAEGER_BIN" | cut -f1) MiB) in $(since "$t0")"
}

# Debian's postinst would start its own prometheus (as user prometheus, on :9090) where services may
# start; stop whatever it started, so nothing but ours runs.
prom_stop_debian_service() {
  local p
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  for p in $(port_pid 9090); do # whatever is left on Debian's port that is the Debian service
    if [[ $(readlink "/proc/$p/exe" 2>/dev/null) == /usr/bin/prometheus ]] && ! ours "$p"; then
      echo "prometheus: stopping the Debian package's own service ($(describe "$p"))"
      stop_one "$p" 15 >/dev/null
    fi
  done
}

prom_install() {
  SVC=prometheus
  local t0=$EPOCHREALTIME have cand
  if [[ -n ${ONLYCHAT_PROMETHEUS_BIN:-} ]]; then
    [[ -x $PROM_BIN ]] || die "ONLYCHAT_PROMETHEUS_BIN=$PROM_BIN is not an executable"
    echo "prometheus: using ONLYCHAT_PROMETHEUS_BIN=$PROM_BIN (not installed)"; return 0
  fi
  have=$(dpkg-query -W -f='${db:Status-Status} ${Version}' prometheus 2>/dev/null || true)
  if [[ $have == "installed $PROM_UPSTREAM+ds-"* && -x $PROM_BIN && -x $PROMTOOL_BIN ]]; then
    echo "prometheus: ${have#installed } already installed ($PROM_BIN)"; return 0
  fi
  command -v apt-get >/dev/null || die "no $PROM_BIN and no apt-get to install Debian's prometheus $PROM_DEB_VERSION"
  ((EUID == 0)) || die "prometheus $PROM_UPSTREAM is not installed; run this as root, or apt-get install prometheus=$PROM_DEB_VERSION"
  if [[ -z $APT_UPDATED ]] && ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    apt-get -q update >>"$TOOLS/logs/apt.log" 2>&1 || die_log "$TOOLS/logs/apt.log" "apt-get update failed"
    APT_UPDATED=1
  fi
  # The pinned Debian version, or, once Debian has replaced it with a rebuild of the same upstream
  # release (a security update), that rebuild.
  cand=$PROM_DEB_VERSION
  if ! apt-cache show "prometheus=$cand" >/dev/null 2>&1; then
    cand=$(apt-cache madison prometheus 2>/dev/null | awk -v u="$PROM_UPSTREAM+ds-" 'index($3, u) == 1 { print $3; exit }')
    [[ -n $cand ]] || die "Debian offers no prometheus $PROM_UPSTREAM (wanted $PROM_DEB_VERSION; apt-cache policy prometheus shows what there is)"
    echo "prometheus: $PROM_DEB_VERSION is no longer offered, installing Debian's rebuild $cand"
  fi
  apt_install "prometheus=$cand"
  prom_stop_debian_service
  [[ -x $PROM_BIN && -x $PROMTOOL_BIN ]] || die "no $PROM_BIN / $PROMTOOL_BIN after apt-get install prometheus"
  echo "prometheus: installed $cand in $(since "$t0")"
}

# ---------------------------------------------------------------- Jaeger
jaeger_config() {
  cat <<EOF
# Jaeger $JAEGER_V2_VERSION for onlychat (written by scripts/observability.sh): all in one process,
# traces in memory, OTLP in, query API out, everything on 127.0.0.1 and on non-default ports.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: $JMETRICS_PORT
    logs:
      level: info

extensions:
  jaeger_query:
    storage:
      traces: memstore
    # no self-tracing: /api/services lists only what was sent here
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$QUERY_GRPC_PORT
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$GRPC_PORT
      http:
        endpoint: 127.0.0.1:$OTLP_PORT

processors:
  batch:
    # hand spans to storage quickly, so a test sees them soon after sending
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
}

jaeger_query_ok() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$QUERY_PORT/api/services"; }
jaeger_otlp_ok() { # an empty export request is accepted once the receiver listens
  curl -fsS -m 2 -o /dev/null -H 'Content-Type: application/json' -d '{}' "http://127.0.0.1:$OTLP_PORT/v1/traces"
}
jaeger_grpc_ok() { tcp_open "$GRPC_PORT"; }

# prepare_start NAME BIN DIR PORT...: the binary is installed, curl is there, DIR exists, a
# previous instance of ours is stopped and its pid file gone, and the ports are free.
prepare_start() {
  local name=$1 bin=$2 d=$3 p; shift 3
  [[ -x $bin ]] || die "no $name binary at $bin: run 'scripts/observability.sh install' first"
  command -v curl >/dev/null || die "curl is needed to check readiness: apt-get install curl"
  mkdir -p "$d"
  if p=$(pid_alive "$d/$name.pid" "$bin"); then
    echo "$name: stopping the previous instance (pid $p)"; stop_one "$p" 15 >/dev/null
  fi
  rm -f "$d/$name.pid"
  free_ports "$@"
}

jaeger_start() {
  SVC=jaeger; local t0=$EPOCHREALTIME d=$DIR/jaeger p
  prepare_start jaeger "$JAEGER_BIN" "$d" "$OTLP_PORT" "$GRPC_PORT" "$QUERY_PORT" "$QUERY_GRPC_PORT" "$JMETRICS_PORT"
  jaeger_config >"$d/config.yaml"
  launch jaeger "$d/jaeger.log" "$JAEGER_BIN" --config "file:$d/config.yaml"
  # The collector starts the query extension before the receivers: wait for all three.
  wait_ready jaeger "$JAEGER_BIN" "$d/jaeger.log" jaeger_query_ok jaeger_otlp_ok jaeger_grpc_ok
  p=$(pid_alive "$d/jaeger.pid" "$JAEGER_BIN") || die_log "$d/jaeger.log" "answers, but the process in $d/jaeger.pid is gone"
  echo "jaeger: up (pid $p) in $(since "$t0"): OTLP/HTTP http://127.0.0.1:$OTLP_PORT/v1/traces," \
    "OTLP/gRPC 127.0.0.1:$GRPC_PORT, query http://127.0.0.1:$QUERY_PORT (api/services, api/traces)," \
    "own metrics http://127.0.0.1:$JMETRICS_PORT/metrics; log $d/jaeger.log"
}
jaeger_stop() {
  SVC=jaeger; local p
  if p=$(pid_alive "$DIR/jaeger/jaeger.pid" "$JAEGER_BIN"); then stop_one "$p" 15; else echo "jaeger: not running"; fi
  rm -f "$DIR/jaeger/jaeger.pid"
}
jaeger_status() {
  SVC=jaeger; local p
  p=$(pid_alive "$DIR/jaeger/jaeger.pid" "$JAEGER_BIN") || { echo "jaeger: stopped"; return 1; }
  if jaeger_query_ok && jaeger_otlp_ok; then echo "jaeger: running (pid $p), answering on 127.0.0.1:$OTLP_PORT and :$QUERY_PORT"
  else echo "jaeger: running (pid $p), NOT answering on 127.0.0.1:$OTLP_PORT / :$QUERY_PORT"; return 1; fi
}

# ---------------------------------------------------------------- Prometheus
prom_ready() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready"; }
# prom_health WORD: how many targets have that health ("up", "down", "unknown") in the targets API.
prom_health() {
  curl -fsS -m 2 "http://127.0.0.1:$PROM_PORT/api/v1/targets?state=active" 2>/dev/null |
    grep -o "\"health\":\"$1\"" | wc -l || true
}
# Prometheus hands new targets to its scrapers only after ~5s (its discovery update interval):
# ready means every target has been scraped once, so a query right after start sees them.
PROM_NTARGETS=0
prom_scraped() { (($(prom_health up) + $(prom_health down) >= PROM_NTARGETS)); }

prom_start() {
  SVC=prometheus; local t0=$EPOCHREALTIME d=$DIR/prometheus p t line targets=() files=() scrape_wait=1
  while (($#)); do
    case $1 in
      --target) (($# >= 2)) || die "--target needs HOST:PORT"; targets+=("$2"); shift 2 ;;
      --target=*) targets+=("${1#*=}"); shift ;;
      --targets-file) (($# >= 2)) || die "--targets-file needs a file"; files+=("$2"); shift 2 ;;
      --targets-file=*) files+=("${1#*=}"); shift ;;
      --no-scrape-wait) scrape_wait=; shift ;;
      *) die "unknown argument '$1' (start-prometheus --target HOST:PORT ... [--targets-file FILE] [--no-scrape-wait])" ;;
    esac
  done
  for t in "${files[@]}"; do
    [[ -r $t ]] || die "targets file $t is not readable"
    while IFS= read -r line || [[ -n $line ]]; do
      line=${line%%#*}; line=${line//[[:space:]]/}
      [[ -n $line ]] && targets+=("$line")
    done <"$t"
  done
  ((${#targets[@]})) || die "no targets: give --target HOST:PORT (repeatable) or --targets-file FILE"
  mapfile -t targets < <(printf '%s\n' "${targets[@]}" | awk '!seen[$0]++') # each once, in order
  PROM_NTARGETS=${#targets[@]}
  for t in "${targets[@]}"; do
    [[ $t =~ ^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):[0-9]{1,5}$ ]] || die "target '$t' is not HOST:PORT"
  done
  prepare_start prometheus "$PROM_BIN" "$d" "$PROM_PORT"
  {
    echo "# Prometheus for onlychat (written by scripts/observability.sh)"
    echo "global: {scrape_interval: $SCRAPE_INTERVAL, scrape_timeout: $SCRAPE_INTERVAL, evaluation_interval: $SCRAPE_INTERVAL}"
    echo "scrape_configs:"
    echo "  - job_name: onlychat"
    echo "    metrics_path: /metrics"
    echo "    static_configs:"
    echo "      - targets:"
    for t in "${targets[@]}"; do echo "          - '$t'"; done
  } >"$d/prometheus.yml"
  if [[ -x $PROMTOOL_BIN ]]; then
    "$PROMTOOL_BIN" check config "$d/prometheus.yml" >"$d/promtool.log" 2>&1 ||
      die_log "$d/promtool.log" "the generated $d/prometheus.yml is invalid"
  fi
  rm -rf "$d/data"; mkdir -p "$d/data"
  launch prometheus "$d/prometheus.log" "$PROM_BIN" --config.file="$d/prometheus.yml" \
    --storage.tsdb.path="$d/data" --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle
  wait_ready prometheus "$PROM_BIN" "$d/prometheus.log" prom_ready ${scrape_wait:+prom_scraped}
  p=$(pid_alive "$d/prometheus.pid" "$PROM_BIN") || die_log "$d/prometheus.log" "answers, but the process in $d/prometheus.pid is gone"
  t="first scrape in ~5s"; [[ $scrape_wait ]] && t="$(prom_health up) of $PROM_NTARGETS up at the first scrape"
  echo "prometheus: up (pid $p) in $(since "$t0") on http://127.0.0.1:$PROM_PORT, scraping" \
    "${targets[*]} /metrics every $SCRAPE_INTERVAL ($t); log $d/prometheus.log"
}
prom_stop() {
  SVC=prometheus; local p
  if p=$(pid_alive "$DIR/prometheus/prometheus.pid" "$PROM_BIN"); then stop_one "$p" 15; else echo "prometheus: not running"; fi
  rm -rf "$DIR/prometheus/prometheus.pid" "$DIR/prometheus/data"
}
prom_status() {
  SVC=prometheus; local p
  p=$(pid_alive "$DIR/prometheus/prometheus.pid" "$PROM_BIN") || { echo "prometheus: stopped"; return 1; }
  if prom_ready; then echo "prometheus: running (pid $p), ready on 127.0.0.1:$PROM_PORT"
  else echo "prometheus: running (pid $p), NOT ready on 127.0.0.1:$PROM_PORT"; return 1; fi
}

# ---------------------------------------------------------------- commands
usage() { sed -n '5,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
cmd=${1:-}; shift || true
case $cmd in
  install)
    (($# == 0)) || usage
    t_all=$EPOCHREALTIME
    mkdir -p "$TOOLS/bin" "$TOOLS/logs"
    exec 9>"$TOOLS/.install.lock"
    flock -w 1800 9 || die "another install holds $TOOLS/.install.lock for 30 minutes"
    jaeger_install
    prom_install
    SVC=observability; echo "observability: installed in $(since "$t_all")" ;;
  start-jaeger) (($# == 0)) || usage; jaeger_start ;;
  stop-jaeger) (($# == 0)) || usage; jaeger_stop ;;
  start-prometheus) prom_start "$@" ;;
  stop-prometheus) (($# == 0)) || usage; prom_stop ;;
  status)
    rc=0; jaeger_status || rc=1; prom_status || rc=1; exit "$rc" ;;
  down)
    [[ $# == 0 || ($# == 1 && $1 == --clean) ]] || usage
    jaeger_stop; prom_stop
    if [[ ${1:-} == --clean ]]; then rm -rf "${DIR:?}"; echo "observability: removed $DIR"; fi ;;
  env)
    echo "export ONLYCHAT_JAEGER_OTLP_ENDPOINT=http://127.0.0.1:$OTLP_PORT"
    echo "export ONLYCHAT_JAEGER_OTLP_GRPC_ENDPOINT=http://127.0.0.1:$GRPC_PORT"
    echo "export ONLYCHAT_JAEGER_QUERY_URL=http://127.0.0.1:$QUERY_PORT"
    echo "export ONLYCHAT_JAEGER_METRICS_URL=http://127.0.0.1:$JMETRICS_PORT/metrics"
    echo "export ONLYCHAT_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
    printf 'export ONLYCHAT_JAEGER_BIN=%q\n' "$JAEGER_BIN"
    printf 'export ONLYCHAT_PROMETHEUS_BIN=%q\n' "$PROM_BIN" ;;
  *) usage ;;
esac
