#!/usr/bin/env bash
# whylake local services: fetch pinned released artifacts, start real servers on loopback,
# wait until healthy, stop them by pid.
#
#   infra/services.sh fetch  [service...]   download + cache (default: opensearch kafka flink prism)
#   infra/services.sh up     [service...]   fetch if needed, start, wait healthy (default: opensearch kafka)
#   infra/services.sh down   [service...]   stop by pid file, wait for exit (default: every running one)
#   infra/services.sh status [service...]   service, pid, port, health, RSS (default: all);
#                                            exit 0 only if every named service is healthy
#   infra/services.sh env                   export lines for tests and jobs (WHYLAKE_*)
#   infra/services.sh logs   <service>      tail of the service's log
#   infra/services.sh clean  [service...]   delete run data of stopped services (not the cache)
#
# Services: opensearch, kafka, flink (a long-running Beam Flink job server), prism (binary only),
# mlflow (tracking server + model registry, SQLite backend, its own venv), seaweedfs
# (S3-compatible object store), iceberg-rest (Iceberg's REST catalog on the object store).
# chromium (Debian packages), prometheus (Debian's package, or built from the Go module proxy;
# scrapes `whylake metrics serve`).
# Extra fetch target: kafka-expansion (see infra/svc/flink.sh).
# Cache: .infra/cache/ (WHYLAKE_INFRA_CACHE); run data, logs, pids: .infra/run/<service>/
# (WHYLAKE_INFRA_RUN). Versions: infra/versions.env. Ports: see `env`, all overridable.
set -euo pipefail

INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$INFRA_DIR/.." && pwd)"
# shellcheck source=versions.env
source "$INFRA_DIR/versions.env"

CACHE="${WHYLAKE_INFRA_CACHE:-$ROOT/.infra/cache}"
RUN="${WHYLAKE_INFRA_RUN:-$ROOT/.infra/run}"
BEAM_JAR_CACHE="${WHYLAKE_BEAM_JAR_CACHE:-$HOME/.apache_beam/cache/jars}"
HOST=127.0.0.1

OPENSEARCH_PORT="${WHYLAKE_OPENSEARCH_PORT:-9200}"
OPENSEARCH_TRANSPORT_PORT="${WHYLAKE_OPENSEARCH_TRANSPORT_PORT:-9300}"
OPENSEARCH_HEAP="${WHYLAKE_OPENSEARCH_HEAP:--Xms512m -Xmx1g}"
KAFKA_PORT="${WHYLAKE_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${WHYLAKE_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${WHYLAKE_KAFKA_HEAP:--Xms256m -Xmx512m}"
FLINK_JOB_PORT="${WHYLAKE_FLINK_JOB_PORT:-8099}"
FLINK_ARTIFACT_PORT="${WHYLAKE_FLINK_ARTIFACT_PORT:-8098}"
FLINK_EXPANSION_PORT="${WHYLAKE_FLINK_EXPANSION_PORT:-8097}"
FLINK_HEAP="${WHYLAKE_FLINK_HEAP:--Xms256m -Xmx1g}"
MLFLOW_PORT="${WHYLAKE_MLFLOW_PORT:-5055}"
SEAWEEDFS_S3_PORT="${WHYLAKE_S3_PORT:-8333}"
SEAWEEDFS_MASTER_PORT="${WHYLAKE_SEAWEEDFS_MASTER_PORT:-9433}"
SEAWEEDFS_VOLUME_PORT="${WHYLAKE_SEAWEEDFS_VOLUME_PORT:-9440}"
SEAWEEDFS_FILER_PORT="${WHYLAKE_SEAWEEDFS_FILER_PORT:-8988}"
SEAWEEDFS_BUCKET="${WHYLAKE_S3_BUCKET:-whylake}"
# Local-only credentials of the test object store (not a secret: it listens on 127.0.0.1).
SEAWEEDFS_ACCESS_KEY="${WHYLAKE_S3_ACCESS_KEY:-whylake-local}"
SEAWEEDFS_SECRET_KEY="${WHYLAKE_S3_SECRET_KEY:-whylake-local-secret}"
ICEBERG_REST_PORT="${WHYLAKE_ICEBERG_REST_PORT:-8181}"
ICEBERG_REST_HEAP="${WHYLAKE_ICEBERG_REST_HEAP:--Xms128m -Xmx512m}"
ICEBERG_REST_WAREHOUSE="${WHYLAKE_ICEBERG_REST_WAREHOUSE:-s3://$SEAWEEDFS_BUCKET/warehouse}"
UP_TIMEOUT="${WHYLAKE_UP_TIMEOUT:-180}"     # seconds per service to become healthy
DOWN_TIMEOUT="${WHYLAKE_DOWN_TIMEOUT:-60}"  # seconds to exit after SIGTERM, then SIGKILL

ALL_SERVICES=(opensearch kafka flink prism chromium mlflow seaweedfs iceberg-rest prometheus)
DEFAULT_UP=(opensearch kafka)

# ---------------------------------------------------------------- helpers
log() { printf '[infra %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH ($2)"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
size_of() { du -sh "$@" 2>/dev/null | awk '{print $1}' | paste -sd+ -; }
size_bytes() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

java_home() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME"; return; fi
  need_cmd java "install a JDK 17, e.g. apt-get install openjdk-17-jre-headless"
  dirname "$(dirname "$(readlink -f "$(command -v java)")")"
}

java_major() {
  "$(java_home)/bin/java" -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }'
}

require_java() {  # require_java <min major> <what>
  local major; major="$(java_major)"
  [[ -n "$major" && "$major" -ge "$1" ]] || die "$2 needs Java $1+, found '${major:-none}' at $(java_home)"
}

python_bin() {  # a Python with the project's packages (for health checks and tests)
  if [[ -n "${WHYLAKE_PYTHON:-}" ]]; then echo "$WHYLAKE_PYTHON"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
  else command -v python3 || true; fi
}

mvn_run() {  # maven, batch mode, quiet, no transfer progress; full output kept for errors
  need_cmd mvn "install Maven 3.8+, e.g. apt-get install maven"
  local out; out="$(mktemp)"
  local repo=()  # WHYLAKE_MAVEN_REPO_LOCAL: another local repository than ~/.m2/repository
  [[ -z "${WHYLAKE_MAVEN_REPO_LOCAL:-}" ]] || repo=(-Dmaven.repo.local="$WHYLAKE_MAVEN_REPO_LOCAL")
  if ! mvn -B -ntp -q "${repo[@]}" "$@" >"$out" 2>&1; then
    cat "$out" >&2; rm -f "$out"
    die "maven failed: mvn $*"
  fi
  rm -f "$out"
}

# Resolve a generated pom's dependencies into <dest>/ (runtime scope, jars only).
mvn_copy_deps() {  # mvn_copy_deps <pom> <dest>
  mvn_run -f "$1" dependency:copy-dependencies -DoutputDirectory="$2" \
    -DincludeScope=runtime -Dmdep.useRepositoryLayout=false
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# pid file + a marker in the process's environment, WHYLAKE_INFRA_MARK=$RUN/<service>, set by
# start_daemon and kept across exec (guards against pid reuse and foreign processes)
pid_file() { echo "$RUN/$1/pid"; }
read_pid() { local f; f="$(pid_file "$1")"; [[ -s "$f" ]] && cat "$f" || true; }
pid_alive() {  # pid_alive <service>: prints the pid if the recorded process is ours and alive
  local pid; pid="$(read_pid "$1")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF -- "WHYLAKE_INFRA_MARK=$RUN/$1" || return 1
  echo "$pid"
}
rss_of() { awk '/^VmRSS/ { printf "%d MiB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || true; }

# start_daemon <service> <log> <cmd...>: detached from this shell (own session), stdin closed,
# pid written by the process itself right before exec so $RUN/<service>/pid is the server's pid.
start_daemon() {
  local svc="$1" logf="$2"; shift 2
  need_cmd setsid "util-linux"
  local pidf; pidf="$(pid_file "$svc")"
  rm -f "$pidf"
  WHYLAKE_INFRA_MARK="$RUN/$svc" setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidf" "$@" \
    >"$logf" 2>&1 </dev/null &
  local i
  for i in $(seq 1 50); do [[ -s "$pidf" ]] && return 0; sleep 0.1; done
  die "$svc: process did not start (see $logf)"
}

show_log_tail() {  # show_log_tail <service> <files...>
  local svc="$1"; shift
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    printf '\n----- last 40 lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
  printf -- '----- all logs of %s: %s -----\n' "$svc" "$RUN/$svc" >&2
}

# wait_healthy <service> <timeout s>: polls <service>_health; fails fast if the process died.
wait_healthy() {
  local svc="$1" timeout="$2" t0; t0="$(now)"
  local deadline=$(( $(date +%s) + timeout ))
  while :; do
    if "${svc}_health" >/dev/null 2>&1; then
      log "$svc: healthy after $(elapsed "$t0") s"
      return 0
    fi
    if ! pid_alive "$svc" >/dev/null; then
      show_log_tail "$svc" $("${svc}_logs")
      die "$svc: the process exited while starting"
    fi
    if (( $(date +%s) >= deadline )); then
      show_log_tail "$svc" $("${svc}_logs")
      log "$svc: not healthy after ${timeout}s; stopping it"
      stop_service "$svc" || true
      die "$svc: not healthy within ${timeout}s (WHYLAKE_UP_TIMEOUT)"
    fi
    sleep 1
  done
}

stop_service() {
  local svc="$1" pid
  if ! pid="$(pid_alive "$svc")"; then
    [[ -f "$(pid_file "$svc")" ]] && { log "$svc: stale pid file removed"; rm -f "$(pid_file "$svc")"; }
    log "$svc: not running"
    return 0
  fi
  local t0; t0="$(now)"
  log "$svc: stopping pid $pid (SIGTERM)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + DOWN_TIMEOUT ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "$svc: still alive after ${DOWN_TIMEOUT}s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
  rm -f "$(pid_file "$svc")"
  log "$svc: stopped in $(elapsed "$t0") s"
}

start_service() {
  local svc="$1" pid
  if pid="$(pid_alive "$svc")"; then
    if "${svc}_health" >/dev/null 2>&1; then
      log "$svc: already up (pid $pid, port $("${svc}_port"))"
      return 0
    fi
    log "$svc: running (pid $pid) but not healthy yet; waiting"
    wait_healthy "$svc" "$UP_TIMEOUT"
    return 0
  fi
  rm -f "$(pid_file "$svc")"
  local p
  for p in $("${svc}_ports"); do
    port_open "$p" && die "$svc: port $HOST:$p is already in use by another process (set WHYLAKE_*_PORT, see 'env')"
  done
  "${svc}_fetch"
  mkdir -p "$RUN/$svc"
  local t0; t0="$(now)"
  "${svc}_start"
  log "$svc: started pid $(read_pid "$svc"); waiting up to ${UP_TIMEOUT}s for health"
  wait_healthy "$svc" "$UP_TIMEOUT"
  pid="$(read_pid "$svc")"
  log "$svc: up in $(elapsed "$t0") s, pid $pid, port $("${svc}_port"), RSS $(rss_of "$pid")"
}

status_service() {
  local svc="$1" pid health state rss=""
  if declare -F "${svc}_status" >/dev/null; then "${svc}_status"; return; fi
  if pid="$(pid_alive "$svc")"; then
    state=running; rss="$(rss_of "$pid")"
    if "${svc}_health" >/dev/null 2>&1; then health=healthy; else health=UNHEALTHY; fi
  else
    pid=-
    if [[ -f "$(pid_file "$svc")" ]]; then state=dead; else state=stopped; fi
    health=down
  fi
  printf '%-11s %-8s pid=%-8s port=%-6s health=%-9s rss=%-9s %s\n' \
    "$svc" "$state" "$pid" "$("${svc}_port")" "$health" "${rss:--}" "$("${svc}_info")"
  [[ "$health" == healthy ]]
}

# fetch bookkeeping: a directory is complete once its .complete marker exists
is_complete() { [[ -f "$1/.complete" ]]; }
mark_complete() { date -u +%FT%TZ >"$1/.complete"; }
report_fetch() {  # report_fetch <what> <t0> <paths...>
  local what="$1" t0="$2"; shift 2
  log "$what: fetched in $(elapsed "$t0") s, $(size_of "$@") on disk"
}

# ---------------------------------------------------------------- services
for f in "$INFRA_DIR"/svc/*.sh; do
  # shellcheck source=/dev/null
  source "$f"
done

valid_service() {
  local s
  for s in "${ALL_SERVICES[@]}"; do [[ "$s" == "$1" ]] && return 0; done
  return 1
}

check_services() {
  local s
  for s in "$@"; do
    valid_service "$s" || die "unknown service '$s' (known: ${ALL_SERVICES[*]})"
  done
}

print_env() {
  cat <<EOF
export WHYLAKE_OPENSEARCH_URL=http://$HOST:$OPENSEARCH_PORT
export WHYLAKE_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
export WHYLAKE_FLINK_JOB_ENDPOINT=localhost:$FLINK_JOB_PORT
export WHYLAKE_FLINK_EXPANSION_ENDPOINT=localhost:$FLINK_EXPANSION_PORT
export WHYLAKE_FLINK_JOB_SERVER_JAR=$(flink_jar)
export WHYLAKE_FLINK_VERSION=$FLINK_MAJOR_VERSION
export WHYLAKE_PRISM_BIN=$(prism_bin)
export WHYLAKE_PROMETHEUS_URL=http://$HOST:$PROMETHEUS_PORT
export WHYLAKE_MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export WHYLAKE_S3_ENDPOINT=http://$HOST:$SEAWEEDFS_S3_PORT
export WHYLAKE_S3_BUCKET=$SEAWEEDFS_BUCKET
export WHYLAKE_ICEBERG_REST_URI=http://$HOST:$ICEBERG_REST_PORT
# The whylake CLI on the local REST catalog + object store (pyiceberg reads these):
#   export PYICEBERG_CATALOG__WHYLAKE__TYPE=rest
#   export PYICEBERG_CATALOG__WHYLAKE__URI=http://$HOST:$ICEBERG_REST_PORT
#   export PYICEBERG_CATALOG__WHYLAKE__S3__ENDPOINT=http://$HOST:$SEAWEEDFS_S3_PORT
#   export PYICEBERG_CATALOG__WHYLAKE__S3__REGION=us-east-1
#   export PYICEBERG_CATALOG__WHYLAKE__S3__ACCESS_KEY_ID=$SEAWEEDFS_ACCESS_KEY
#   export PYICEBERG_CATALOG__WHYLAKE__S3__SECRET_ACCESS_KEY=$SEAWEEDFS_SECRET_KEY
EOF
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    fetch)
      local svcs=("$@"); [[ ${#svcs[@]} -gt 0 ]] || svcs=("${ALL_SERVICES[@]}")
      local s
      for s in "${svcs[@]}"; do
        if [[ "$s" == kafka-expansion ]]; then kafka_expansion_fetch; continue; fi
        check_services "$s"; "${s}_fetch"
      done ;;
    up)
      local svcs=("$@"); [[ ${#svcs[@]} -gt 0 ]] || svcs=("${DEFAULT_UP[@]}")
      check_services "${svcs[@]}"
      local s
      for s in "${svcs[@]}"; do
        if [[ "$s" == prism ]]; then
          prism_fetch
          log "prism: nothing to start; Beam starts it per pipeline (--runner=PrismRunner --prism_location=$(prism_bin))"
          continue
        fi
        start_service "$s"
      done
      mkdir -p "$RUN"; print_env >"$RUN/env"
      log "connection settings: $RUN/env (source it, or run '$0 env')" ;;
    down)
      local svcs=("$@")
      if [[ ${#svcs[@]} -eq 0 ]]; then svcs=(mlflow flink kafka opensearch iceberg-rest seaweedfs); fi
      check_services "${svcs[@]}"
      local s
      for s in "${svcs[@]}"; do [[ "$s" == prism ]] || stop_service "$s"; done ;;
    status)
      local svcs=("$@"); [[ ${#svcs[@]} -gt 0 ]] || svcs=("${ALL_SERVICES[@]}")
      check_services "${svcs[@]}"
      local s rc=0
      for s in "${svcs[@]}"; do status_service "$s" || rc=3; done
      return "$rc" ;;
    env) print_env ;;
    logs)
      [[ $# -eq 1 ]] || die "usage: $0 logs <service>"
      check_services "$1"
      show_log_tail "$1" $("${1}_logs") ;;
    clean)
      local svcs=("$@"); [[ ${#svcs[@]} -gt 0 ]] || svcs=("${ALL_SERVICES[@]}")
      check_services "${svcs[@]}"
      local s
      for s in "${svcs[@]}"; do
        if pid_alive "$s" >/dev/null; then die "$s is running; '$0 down $s' first"; fi
        rm -rf "${RUN:?}/$s"; log "$s: run data removed"
      done ;;
    -h|--help|help|"") usage ;;
    *) usage; die "unknown command '$cmd'" ;;
  esac
}

main "$@"
