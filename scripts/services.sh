#!/usr/bin/env bash
# Real Redis, PostgreSQL and Apache Kafka on 127.0.0.1 for onlychat's tests and local runs.
# Installs what is missing (Debian packages; Kafka jars from Maven Central), no Docker needed.
#
#   scripts/services.sh up     [redis|postgres|kafka ...]   install if missing, start, wait until answering
#   scripts/services.sh down   [--clean] [redis|postgres|kafka ...]   stop (--clean: delete their data)
#   scripts/services.sh status [redis|postgres|kafka ...]
#   eval "$(scripts/services.sh env)"                       ONLYCHAT_TEST_* variables for the tests
#
# Overrides (a chaos test runs its own instance with its own ports and dir):
#   ONLYCHAT_SVC_DIR (/tmp/onlychat-services), ONLYCHAT_SVC_REDIS_PORT (16379), ONLYCHAT_SVC_PG_PORT
#   (15432), ONLYCHAT_SVC_KAFKA_PORT (19092), ONLYCHAT_SVC_KAFKA_CONTROLLER_PORT (19093),
#   ONLYCHAT_KAFKA_CACHE (~/.cache/onlychat/kafka-4.1.1), ONLYCHAT_SVC_KAFKA_WAIT (90 seconds).
set -Eeuo pipefail
# shellcheck disable=SC2015 # "A && B || die" is meant: die when either fails

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${ONLYCHAT_SVC_DIR:-/tmp/onlychat-services}
REDIS_PORT=${ONLYCHAT_SVC_REDIS_PORT:-16379}
PG_PORT=${ONLYCHAT_SVC_PG_PORT:-15432}
KAFKA_PORT=${ONLYCHAT_SVC_KAFKA_PORT:-19092}
KAFKA_CPORT=${ONLYCHAT_SVC_KAFKA_CONTROLLER_PORT:-19093}
KAFKA_CACHE=${ONLYCHAT_KAFKA_CACHE:-$HOME/.cache/onlychat/kafka-4.1.1}
KAFKA_WAIT=${ONLYCHAT_SVC_KAFKA_WAIT:-90}
KAFKA_TOOL=(java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC
  "-Dlog4j2.configurationFile=$HERE/kafka/log4j2-tools.properties" -cp "$KAFKA_CACHE/libs/*")
SVC=services # the service being worked on, named in every error
APT_UPDATED=

trap '((BASH_SUBSHELL)) || echo "services.sh: $SVC: command failed (exit $?): $BASH_COMMAND" >&2' ERR
die() { echo "services.sh: $SVC: $*" >&2; exit 1; }
# die_log FILE MESSAGE: the one-line error, then the tail of the service's log.
die_log() { echo "services.sh: $SVC: $2" >&2; [[ -f $1 ]] && tail -n 20 "$1" | sed 's/^/  | /' >&2; exit 1; }
since() { awk -v a="${1/,/.}" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.2fs", b - a }'; }

# pid_alive PIDFILE PATTERN: prints the pid if that process lives and its command line has PATTERN.
pid_alive() {
  local p
  [[ -s $1 ]] && p=$(head -n1 "$1") && [[ $p =~ ^[0-9]+$ ]] && kill -0 "$p" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "$2" && echo "$p"
}

# stop_pid PIDFILE PATTERN SIGNAL TIMEOUT: signal, wait, then SIGKILL.
stop_pid() {
  local p i
  if ! p=$(pid_alive "$1" "$2"); then echo "$SVC: not running"; return 0; fi
  kill -"$3" "$p" 2>/dev/null || true
  for ((i = 0; i < $4 * 10; i++)); do
    kill -0 "$p" 2>/dev/null || { echo "$SVC: stopped (pid $p)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$p" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  echo "$SVC: killed (pid $p) after ${4}s without exiting on SIG$3"
}

# wait_for SECONDS CMD...: until CMD succeeds (quietly).
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < end)) || return 1; sleep 0.1; done
}

apt_install() {
  ((EUID == 0)) || die "$* missing; install it (apt-get install $*) or run this script as root"
  command -v apt-get >/dev/null || die "$* missing and there is no apt-get to install it"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300) log=$DIR/apt.log
  echo "$SVC: installing $* (apt-get, log $log)"
  if [[ -z $APT_UPDATED ]] && ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    "${apt[@]}" update >>"$log" 2>&1 || die_log "$log" "apt-get update failed"
    APT_UPDATED=1
  fi
  "${apt[@]}" install --no-install-recommends "$@" >>"$log" 2>&1 && return 0
  [[ -z $APT_UPDATED ]] || die_log "$log" "apt-get install $* failed"
  APT_UPDATED=1 # the package lists may be stale: refresh once and retry
  "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install --no-install-recommends "$@" >>"$log" 2>&1 ||
    die_log "$log" "apt-get install $* failed"
}

# ---------------------------------------------------------------- Redis
redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
redis_up() {
  SVC=redis; local t0=$EPOCHREALTIME d=$DIR/redis p
  command -v redis-server >/dev/null || apt_install redis-server
  if p=$(pid_alive "$d/redis.pid" redis-server); then
    echo "redis: already running (pid $p) on 127.0.0.1:$REDIS_PORT"; return 0
  fi
  mkdir -p "$d"; rm -f "$d/redis.pid"
  redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$d" --pidfile "$d/redis.pid" \
    --logfile "$d/redis.log" --save "" --appendonly no || die_log "$d/redis.log" "redis-server failed to start"
  wait_for 15 redis_ping && pid_alive "$d/redis.pid" redis-server >/dev/null ||
    die_log "$d/redis.log" "no PONG from our redis-server on 127.0.0.1:$REDIS_PORT within 15s (port taken?)"
  echo "redis: up on 127.0.0.1:$REDIS_PORT in $(since "$t0")"
}
redis_down() { SVC=redis; stop_pid "$DIR/redis/redis.pid" redis-server TERM 15; }
redis_status() { SVC=redis; show_status "$DIR/redis/redis.pid" redis-server "$REDIS_PORT" redis_ping; }

# ---------------------------------------------------------------- PostgreSQL
pg_bin() { local b; b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1); [[ -x $b/postgres ]] && echo "$b"; }
as_pg() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; } # postgres refuses root
pg_ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }
postgres_up() {
  SVC=postgres; local t0=$EPOCHREALTIME d=$DIR/postgres bin p
  bin=$(pg_bin) || { apt_install postgresql; bin=$(pg_bin) || die "no /usr/lib/postgresql/*/bin/postgres after install"; }
  if p=$(pid_alive "$d/data/postmaster.pid" postgres); then
    echo "postgres: already running (pid $p) on 127.0.0.1:$PG_PORT"; return 0
  fi
  mkdir -p "$d/run"
  if ((EUID == 0)); then
    chmod o+x "$DIR"; chown postgres:postgres "$d" "$d/run"
    runuser -u postgres -- test -w "$d" || die "user postgres cannot write $d (make $DIR's parents traversable)"
  fi
  if [[ ! -s $d/data/PG_VERSION ]]; then
    as_pg "$bin/initdb" -D "$d/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      --no-locale >"$d/initdb.log" 2>&1 || die_log "$d/initdb.log" "initdb failed"
    cat >>"$d/data/postgresql.conf" <<EOF
# onlychat test instance (scripts/services.sh): loopback only, fast and unsafe.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$d/run'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  as_pg "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 -o "-p $PG_PORT -k $d/run" start >/dev/null ||
    die_log "$d/postgres.log" "pg_ctl start failed on 127.0.0.1:$PG_PORT"
  wait_for 30 pg_ready || die_log "$d/postgres.log" "pg_isready fails on 127.0.0.1:$PG_PORT after 30s"
  as_pg "$bin/psql" -X -q -h "$d/run" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'onlychat') THEN
      CREATE ROLE onlychat LOGIN SUPERUSER CREATEDB PASSWORD 'onlychat'; END IF; END \$\$" >/dev/null ||
    die "could not create role onlychat"
  echo "postgres: up on 127.0.0.1:$PG_PORT in $(since "$t0")"
}
postgres_down() { SVC=postgres; stop_pid "$DIR/postgres/data/postmaster.pid" postgres INT 30; } # SIGINT = fast shutdown
postgres_status() { SVC=postgres; show_status "$DIR/postgres/data/postmaster.pid" postgres "$PG_PORT" pg_ready; }

# ---------------------------------------------------------------- Kafka
kafka_libs() { # resolve the broker's jars once into $KAFKA_CACHE/libs; the marker holds the pom's hash
  local sum marker=$KAFKA_CACHE/libs/.complete
  sum=$(sha256sum <"$HERE/kafka/pom.xml" | cut -d' ' -f1)
  [[ -f $marker && $(<"$marker") == "$sum" ]] && return 0
  command -v java >/dev/null && command -v mvn >/dev/null || apt_install openjdk-17-jre-headless maven
  mkdir -p "$KAFKA_CACHE"
  exec 9>"$KAFKA_CACHE/.lock"; flock 9 # another services.sh may be resolving right now
  if ! [[ -f $marker && $(<"$marker") == "$sum" ]]; then
    echo "kafka: resolving Kafka jars from Maven Central into $KAFKA_CACHE/libs"
    rm -rf "$KAFKA_CACHE/libs.new"
    mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$KAFKA_CACHE/libs.new" >"$KAFKA_CACHE/mvn.log" 2>&1 ||
      die_log "$KAFKA_CACHE/mvn.log" "mvn could not resolve the Kafka jars"
    echo "$sum" >"$KAFKA_CACHE/libs.new/.complete"
    rm -rf "$KAFKA_CACHE/libs"; mv "$KAFKA_CACHE/libs.new" "$KAFKA_CACHE/libs"
  fi
  exec 9>&-
}
# kafka_answers: a Metadata v4 request over bash's /dev/tcp (api_key 3, version 4, correlation id 1,
# null client id, null topic list = all, no auto-creation); the reply must list one broker, node 1.
# The 4.x broker opens its PLAINTEXT listener only once it is unfenced, so this means "ready".
kafka_answers() {
  local hex
  hex=$( (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT" &&
    printf '\x00\x00\x00\x0f\x00\x03\x00\x04\x00\x00\x00\x01\xff\xff\xff\xff\xff\xff\x00' >&3 &&
    timeout 5 head -c 20 <&3 | od -An -tx1 | tr -d ' \n') 2>/dev/null) || return 1
  [[ $hex == ????????00000001????????0000000100000001 ]] # size, correlation, throttle, 1 broker, node 1
}
kafka_keep_cds() { # move a class-data archive dumped by an exited broker into the jar cache
  [[ -s $1/broker.jsa && ! -s $KAFKA_CACHE/libs/broker.jsa ]] &&
    mv "$1/broker.jsa" "$KAFKA_CACHE/libs/broker.jsa.$$" && mv "$KAFKA_CACHE/libs/broker.jsa.$$" "$KAFKA_CACHE/libs/broker.jsa"
  rm -f "$1/broker.jsa"
}
kafka_up() {
  SVC=kafka; local t0=$EPOCHREALTIME d=$DIR/kafka p id end cds
  kafka_libs
  if p=$(pid_alive "$d/kafka.pid" kafka.Kafka); then
    echo "kafka: already running (pid $p) on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  mkdir -p "$d/logs"
  cat >"$d/server.properties" <<EOF
# Single combined broker+controller (KRaft) for onlychat tests; written by scripts/services.sh.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CPORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
EOF
  if [[ ! -s $d/data/meta.properties ]]; then
    id=-; until [[ $id != -* ]]; do id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22); done
    "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format --standalone --cluster-id "$id" \
      --config "$d/server.properties" >"$d/logs/format.log" 2>&1 || die_log "$d/logs/format.log" "storage format failed"
  fi
  rm -f "$d/kafka.pid"
  # Class-data sharing nearly halves the JVM start: the first broker to exit dumps the classes it
  # loaded (kafka_keep_cds moves them into the cache), later brokers map that archive.
  kafka_keep_cds "$d"; cds=-XX:ArchiveClassesAtExit=$d/broker.jsa
  [[ -s $KAFKA_CACHE/libs/broker.jsa ]] && cds=-XX:SharedArchiveFile=$KAFKA_CACHE/libs/broker.jsa
  # The launched bash writes its own pid and then becomes the JVM, so the pid file names the broker.
  (cd "$d" && exec nohup setsid bash -c 'echo $$ >kafka.pid; exec "$@"' kafka java -Xms256m -Xmx512m \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "$cds" -Xlog:cds=error,cds+dynamic=error \
    "-Dkafka.logs.dir=$d/logs" "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" \
    -cp "$KAFKA_CACHE/libs/*" kafka.Kafka "$d/server.properties" >"$d/logs/console.log" 2>&1 </dev/null &)
  end=$((SECONDS + KAFKA_WAIT))
  until kafka_answers; do
    ((SECONDS < end)) || die_log "$d/logs/server.log" "broker on 127.0.0.1:$KAFKA_PORT does not answer metadata after ${KAFKA_WAIT}s"
    [[ ! -s $d/kafka.pid ]] || pid_alive "$d/kafka.pid" kafka.Kafka >/dev/null ||
      die_log "$d/logs/console.log" "broker exited during startup (log: $d/logs/server.log)"
    sleep 0.2
  done
  echo "kafka: up on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CPORT) in $(since "$t0")"
}
kafka_down() {
  SVC=kafka; stop_pid "$DIR/kafka/kafka.pid" kafka.Kafka TERM 30
  rm -f "$DIR/kafka/kafka.pid"; kafka_keep_cds "$DIR/kafka"
}
kafka_status() { SVC=kafka; show_status "$DIR/kafka/kafka.pid" kafka.Kafka "$KAFKA_PORT" kafka_answers; }

# ---------------------------------------------------------------- commands
show_status() { # PIDFILE PATTERN PORT PROBE
  local p
  if ! p=$(pid_alive "$1" "$2"); then echo "$SVC: stopped"; return 1; fi
  if "$4"; then echo "$SVC: running (pid $p), answering on 127.0.0.1:$3"
  else echo "$SVC: running (pid $p), NOT answering on 127.0.0.1:$3"; return 1; fi
}

usage() { sed -n '5,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
cmd=${1:-}; shift || true
clean=; svcs=()
for a in "$@"; do
  case $a in
    --clean) clean=1 ;;
    redis | postgres | kafka) svcs+=("$a") ;;
    *) echo "services.sh: unknown argument '$a'" >&2; usage ;;
  esac
done
((${#svcs[@]})) || svcs=(redis postgres kafka)

case $cmd in
  up)
    mkdir -p "$DIR"; t_all=$EPOCHREALTIME
    for s in "${svcs[@]}"; do "${s}_up"; done
    SVC=services; echo "services: ${svcs[*]} up in $(since "$t_all") (state in $DIR)" ;;
  down)
    for s in "${svcs[@]}"; do "${s}_down"; done
    if [[ $clean ]]; then
      if ((${#svcs[@]} == 3)); then rm -rf "${DIR:?}"; else for s in "${svcs[@]}"; do rm -rf "${DIR:?}/$s"; done; fi
      echo "services: removed the data of ${svcs[*]} in $DIR"
    fi ;;
  status)
    rc=0; for s in "${svcs[@]}"; do "${s}_status" || rc=1; done; exit "$rc" ;;
  env)
    echo "export ONLYCHAT_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    echo "export ONLYCHAT_TEST_DATABASE_URL=postgres://onlychat:onlychat@127.0.0.1:$PG_PORT/postgres"
    echo "export ONLYCHAT_TEST_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT" ;;
  *) usage ;;
esac
