# OpenSearch: one node, plain HTTP on 127.0.0.1, single-node discovery, small heap.
# Sourced by infra/services.sh. Artifact: the distribution OpenSearch publishes for integration
# tests, org.opensearch.distribution.integ-test-zip:opensearch:<version>:zip (no bundled JDK,
# no plugins: no security, no ISM, no painless/reindex/analysis-common modules; core APIs only).

opensearch_home() { echo "$CACHE/opensearch/opensearch-$OPENSEARCH_VERSION"; }
opensearch_port() { echo "$OPENSEARCH_PORT"; }
opensearch_ports() { echo "$OPENSEARCH_PORT $OPENSEARCH_TRANSPORT_PORT"; }
opensearch_logs() { echo "$RUN/opensearch/stdout.log $RUN/opensearch/logs/whylake.log"; }
opensearch_info() { echo "url=http://$HOST:$OPENSEARCH_PORT version=$OPENSEARCH_VERSION"; }

opensearch_fetch() {
  local dest; dest="$(opensearch_home)"
  if is_complete "$dest"; then log "opensearch $OPENSEARCH_VERSION: cached at $dest"; return 0; fi
  need_cmd unzip "apt-get install unzip"
  local t0; t0="$(now)"
  local coord="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip"
  log "opensearch: resolving $coord from Maven Central"
  local tmp; tmp="$(mktemp -d "$CACHE/.opensearch.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE"; mktemp -d "$CACHE/.opensearch.XXXXXX"; })"
  mvn_run dependency:copy -Dartifact="$coord" -DoutputDirectory="$tmp"
  local zip="$tmp/opensearch-$OPENSEARCH_VERSION.zip"
  [[ -f "$zip" ]] || die "opensearch: $zip missing after maven copy"
  log "opensearch: downloaded $(size_of "$zip") zip"
  unzip -q "$zip" -d "$tmp/x"
  [[ -x "$tmp/x/opensearch-$OPENSEARCH_VERSION/bin/opensearch" ]] || die "opensearch: unexpected zip layout"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  mv "$tmp/x/opensearch-$OPENSEARCH_VERSION" "$dest"
  rm -rf "$tmp"
  mark_complete "$dest"
  report_fetch "opensearch $OPENSEARCH_VERSION" "$t0" "$dest"
}

opensearch_start() {
  require_java 11 "OpenSearch $OPENSEARCH_VERSION"
  need_cmd curl "the health check uses curl: apt-get install curl"
  local run="$RUN/opensearch" home; home="$(opensearch_home)"
  mkdir -p "$run/config/jvm.options.d" "$run/data" "$run/logs" "$run/tmp"
  # a private config dir (OPENSEARCH_PATH_CONF) so the cached distribution stays pristine
  cp "$home/config/jvm.options" "$home/config/log4j2.properties" "$run/config/"
  cat >"$run/config/opensearch.yml" <<EOF
cluster.name: whylake
node.name: whylake-1
path.data: $run/data
path.logs: $run/logs
network.host: $HOST
http.port: $OPENSEARCH_PORT
transport.port: $OPENSEARCH_TRANSPORT_PORT
discovery.type: single-node
cluster.routing.allocation.disk.threshold_enabled: false
cluster.routing.allocation.disk.watermark.low: 99%
cluster.routing.allocation.disk.watermark.high: 99%
cluster.routing.allocation.disk.watermark.flood_stage: 99%
action.destructive_requires_name: false
EOF
  # heap and GC logs (the default jvm.options writes gc.log relative to the cwd)
  # shellcheck disable=SC2086
  # -XX:-AlwaysPreTouch: the launcher pre-touches the whole heap; on a small machine, don't
  printf '%s\n' $OPENSEARCH_HEAP -XX:-AlwaysPreTouch "-XX:HeapDumpPath=$run/logs" "-XX:ErrorFile=$run/logs/hs_err_pid%p.log" \
    >"$run/config/jvm.options.d/whylake.options"
  sed -i -e '/^-Xm[sx]/d' -e '/Xlog:gc/d' "$run/config/jvm.options"
  if [[ "$(id -u)" == 0 ]]; then
    # OpenSearch refuses to run as root, and checks that through JNA (geteuid). CI here runs as
    # root: keep JNA's native library from loading, which skips that check (and the native
    # extras a dev node does not need: mlockall, the seccomp filter, the max-threads check).
    log "opensearch: running as root, so JNA is disabled for this node (dev/CI only)"
    printf '%s\n' -Djna.nosys=true -Djna.nounpack=true -Djna.boot.library.path=/nonexistent \
      >>"$run/config/jvm.options.d/whylake.options"
  fi
  local jhome; jhome="$(java_home)"
  (
    cd "$run" || exit 1
    export OPENSEARCH_PATH_CONF="$run/config" OPENSEARCH_TMPDIR="$run/tmp" OPENSEARCH_JAVA_HOME="$jhome"
    start_daemon opensearch "$run/stdout.log" "$home/bin/opensearch"
  )
}

opensearch_health() {
  local body
  body="$(curl -fsS -m 5 "http://$HOST:$OPENSEARCH_PORT/_cluster/health?timeout=2s")" || return 1
  [[ "$body" =~ \"status\":\"(green|yellow)\" ]]
}
