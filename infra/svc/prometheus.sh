# Prometheus server (Go), built from the Go module proxy with `go install` (its release
# tarballs live on GitHub, which is not reachable). Sourced by infra/services.sh.
# `-tags remove_all_sd` leaves out every bundled service-discovery provider (Kubernetes, the
# clouds, Consul, ...): whylake's targets are static, and the build compiles a third of the code.
# The web UI's assets are not embedded (no `builtinassets` tag); the HTTP API, scraping, rule
# evaluation and alerting are all there.
#
#   infra/services.sh fetch prometheus   # build once into .infra/cache/prometheus/<version>/bin
#   infra/services.sh up prometheus      # scrape WHYLAKE_METRICS_TARGET (`whylake metrics serve`)
#
# The server started by `up` scrapes $WHYLAKE_METRICS_TARGET (default 127.0.0.1:9464) and loads
# the alerting rules in $WHYLAKE_PROMETHEUS_RULES (default monitor/prometheus/whylake-rules.yml,
# which `whylake metrics rules` writes from the SLO file). Tests start a private server of their
# own from the same binary (tests/integration/test_prometheus.py).

PROMETHEUS_PORT="${WHYLAKE_PROMETHEUS_PORT:-9090}"
prometheus_dir() { echo "$CACHE/prometheus/$PROMETHEUS_VERSION"; }
prometheus_bin() { echo "$(prometheus_dir)/bin/prometheus"; }
prometheus_port() { echo "$PROMETHEUS_PORT"; }
prometheus_ports() { echo "$PROMETHEUS_PORT"; }
prometheus_logs() { echo "$(prometheus_dir)/build.log $RUN/prometheus/stdout.log"; }
prometheus_info() {
  echo "url=http://$HOST:$PROMETHEUS_PORT version=$PROMETHEUS_VERSION target=${WHYLAKE_METRICS_TARGET:-127.0.0.1:9464}"
}

prometheus_fetch() {
  local dir; dir="$(prometheus_dir)"
  if is_complete "$dir" && [[ -x "$(prometheus_bin)" ]]; then
    log "prometheus $PROMETHEUS_VERSION: cached at $(prometheus_bin)"
    return 0
  fi
  need_cmd go "install Go 1.26.7+ to build prometheus from the Go module proxy"
  local t0; t0="$(now)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  # private module and build caches (removed afterwards unless WHYLAKE_KEEP_GO_CACHE=1);
  # GOTOOLCHAIN=local: never download another Go toolchain
  local gocache="$CACHE/prometheus/.go"
  local ver="-X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE"
  ver+=" -X github.com/prometheus/common/version.Branch=go-module-proxy"
  ver+=" -X github.com/prometheus/common/version.Revision=$PROMETHEUS_VERSION"
  log "prometheus: go install $PROMETHEUS_MODULE/cmd/prometheus@$PROMETHEUS_VERSION (Prometheus $PROMETHEUS_RELEASE; 5-15 min on 2 cores; log: $dir/build.log)"
  if ! GOBIN="$dir/bin" GOMODCACHE="$gocache/mod" GOCACHE="$gocache/build" GOPATH="$gocache/path" \
      GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" \
      nice -n 10 go install -tags remove_all_sd -ldflags="-s -w $ver" \
        "$PROMETHEUS_MODULE/cmd/prometheus@$PROMETHEUS_VERSION" >"$dir/build.log" 2>&1; then
    show_log_tail prometheus "$dir/build.log"
    die "prometheus: go install failed"
  fi
  [[ -x "$(prometheus_bin)" ]] || die "prometheus: $(prometheus_bin) missing after go install"
  "$(prometheus_bin)" --version >>"$dir/build.log" 2>&1 || die "prometheus: the binary does not run"
  mark_complete "$dir"
  report_fetch "prometheus $PROMETHEUS_VERSION (binary $(size_of "$(prometheus_bin)"), module+build caches $(size_of "$gocache"))" "$t0" "$dir"
  if [[ "${WHYLAKE_KEEP_GO_CACHE:-0}" != 1 ]]; then
    GOMODCACHE="$gocache/mod" GOCACHE="$gocache/build" GOPATH="$gocache/path" GOTOOLCHAIN=local \
      go clean -modcache -cache >/dev/null 2>&1 || true
    chmod -R u+w "$gocache" 2>/dev/null || true
    rm -rf "$gocache"
  fi
}

prometheus_start() {
  need_cmd curl "the health check uses curl: apt-get install curl"
  local run="$RUN/prometheus"
  local rules="${WHYLAKE_PROMETHEUS_RULES:-$ROOT/monitor/prometheus/whylake-rules.yml}"
  [[ -f "$rules" ]] || die "prometheus: rules file $rules missing (whylake metrics rules > FILE)"
  mkdir -p "$run/data"
  cp "$rules" "$run/whylake-rules.yml"
  cat >"$run/prometheus.yml" <<EOF
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
  - $run/whylake-rules.yml
scrape_configs:
  - job_name: whylake
    static_configs:
      - targets: ["${WHYLAKE_METRICS_TARGET:-127.0.0.1:9464}"]
EOF
  start_daemon prometheus "$run/stdout.log" "$(prometheus_bin)" \
    --config.file="$run/prometheus.yml" --storage.tsdb.path="$run/data" \
    --web.listen-address="$HOST:$PROMETHEUS_PORT" --storage.tsdb.retention.time=15d
}

prometheus_health() { curl -fsS -m 5 "http://$HOST:$PROMETHEUS_PORT/-/ready" >/dev/null; }
