# Prometheus server (Go). By default the binary of Debian's released `prometheus` package
# (pinned in versions.env: `apt-get download`, then `dpkg-deb -x` into the cache, so no
# maintainer script runs and no system daemon starts; 19 MB, a few seconds). Its release
# tarballs live on GitHub, which is not reachable. WHYLAKE_PROMETHEUS_FROM=go builds the newer
# release from the Go module proxy instead (`go install`, 5-15 min of 2 cores: too long to pay
# in every CI run). Sourced by infra/services.sh.
# The Go build uses `-tags remove_all_sd` (no bundled service-discovery providers: whylake's
# targets are static, and the build compiles a third of the code) and embeds no web UI assets;
# the HTTP API, scraping, rule evaluation and alerting are all there.
#
#   infra/services.sh fetch prometheus   # once, into .infra/cache/prometheus/<version>/bin
#   infra/services.sh up prometheus      # scrape WHYLAKE_METRICS_TARGET (`whylake metrics serve`)
#
# The server started by `up` scrapes $WHYLAKE_METRICS_TARGET (default 127.0.0.1:9464) and loads
# the alerting rules in $WHYLAKE_PROMETHEUS_RULES (default monitor/prometheus/whylake-rules.yml,
# which `whylake metrics rules` writes from the SLO file). Tests start a private server of their
# own from the same binary (tests/integration/test_monitor.py).

PROMETHEUS_PORT="${WHYLAKE_PROMETHEUS_PORT:-9090}"
PROMETHEUS_FROM="${WHYLAKE_PROMETHEUS_FROM:-debian}"
prometheus_dir() {
  if [[ "$PROMETHEUS_FROM" == go ]]; then
    echo "$CACHE/prometheus/$PROMETHEUS_VERSION"
  else
    echo "$CACHE/prometheus/deb-$PROMETHEUS_DEB_VERSION"
  fi
}
prometheus_bin() { echo "$(prometheus_dir)/bin/prometheus"; }
prometheus_port() { echo "$PROMETHEUS_PORT"; }
prometheus_ports() { echo "$PROMETHEUS_PORT"; }
prometheus_logs() { echo "$(prometheus_dir)/build.log $RUN/prometheus/stdout.log"; }
prometheus_info() {
  echo "url=http://$HOST:$PROMETHEUS_PORT from=$PROMETHEUS_FROM dir=$(prometheus_dir) target=${WHYLAKE_METRICS_TARGET:-127.0.0.1:9464}"
}

prometheus_fetch() {
  local dir; dir="$(prometheus_dir)"
  if is_complete "$dir" && [[ -x "$(prometheus_bin)" ]]; then
    log "prometheus ($PROMETHEUS_FROM): cached at $(prometheus_bin)"
    return 0
  fi
  case "$PROMETHEUS_FROM" in
    debian) prometheus_fetch_deb ;;
    go) prometheus_fetch_go ;;
    *) die "WHYLAKE_PROMETHEUS_FROM=$PROMETHEUS_FROM: debian or go" ;;
  esac
}

prometheus_fetch_deb() {
  local dir; dir="$(prometheus_dir)"
  need_cmd apt-get "Debian's prometheus package is fetched with apt-get download"
  need_cmd dpkg-deb "the binary is taken out of the .deb with dpkg-deb -x"
  local t0 sudo=(); t0="$(now)"
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/deb"
  local want="prometheus=$PROMETHEUS_DEB_VERSION"
  log "prometheus: apt-get download $want (log: $dir/build.log)"
  # A fresh machine may have no package lists yet: update them once, then download.
  if ! (cd "$dir/deb" && apt-get download "$want") >"$dir/build.log" 2>&1; then
    "${sudo[@]}" apt-get update -q >>"$dir/build.log" 2>&1 || true
    if ! (cd "$dir/deb" && apt-get download "$want") >>"$dir/build.log" 2>&1; then
      show_log_tail prometheus "$dir/build.log"
      die "prometheus: apt-get download $want failed (WHYLAKE_PROMETHEUS_FROM=go builds it)"
    fi
  fi
  dpkg-deb -x "$dir"/deb/prometheus_*.deb "$dir/deb/root" >>"$dir/build.log" 2>&1 \
    || die "prometheus: dpkg-deb -x failed"
  cp "$dir/deb/root/usr/bin/prometheus" "$dir/deb/root/usr/bin/promtool" "$dir/bin/"
  rm -rf "$dir/deb"
  "$(prometheus_bin)" --version >>"$dir/build.log" 2>&1 || die "prometheus: the binary does not run"
  mark_complete "$dir"
  report_fetch "prometheus $PROMETHEUS_DEB_VERSION (Debian package)" "$t0" "$dir"
}

prometheus_fetch_go() {
  local dir; dir="$(prometheus_dir)"
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
