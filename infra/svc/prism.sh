# Prism, Beam's portable local runner (Go), built from the Go module proxy with `go install`
# (its release zips live on GitHub, which is not reachable). Sourced by infra/services.sh.
# Nothing long-running: Beam starts the binary per pipeline with
#   --runner=PrismRunner --prism_location=<binary>
# Opt-in: WHYLAKE_PRISM_STAGE_BEAM_CACHE=1 also stages it where Beam looks for its release zip
# (~/.apache_beam/cache/prism/bin/apache_beam-v<ver>-prism-<os>-<arch>[.zip]); then plain
# PrismRunner, and the DirectRunner (which tries Prism first), use it. That changes what the
# DirectRunner runs on, so it is off by default.

prism_dir() { echo "$CACHE/prism/$PRISM_VERSION"; }
prism_bin() { echo "$(prism_dir)/bin/prism"; }
prism_port() { echo "-"; }
prism_ports() { :; }
prism_logs() { echo "$(prism_dir)/build.log"; }
prism_info() { echo "binary=$(prism_bin) version=$PRISM_VERSION"; }
prism_start() { :; }
prism_health() { [[ -x "$(prism_bin)" ]]; }
prism_status() {
  local state=missing
  is_complete "$(prism_dir)" && [[ -x "$(prism_bin)" ]] && state=built
  printf '%-11s %-8s pid=%-8s port=%-6s health=%-9s rss=%-9s %s\n' \
    prism "$state" - - "$([[ $state == built ]] && echo ok || echo missing)" - "$(prism_info)"
  [[ "$state" == built ]]
}

prism_fetch() {
  local dir; dir="$(prism_dir)"
  if is_complete "$dir" && [[ -x "$(prism_bin)" ]]; then
    log "prism $PRISM_VERSION: cached at $(prism_bin)"
  else
    need_cmd go "install Go 1.24+ to build prism from the Go module proxy"
    local t0; t0="$(now)"
    rm -rf "$dir"; mkdir -p "$dir/bin"
    # private module and build caches (removed afterwards unless WHYLAKE_KEEP_GO_CACHE=1);
    # GOTOOLCHAIN=local: never download another Go toolchain
    local gocache="$CACHE/prism/.go"
    log "prism: go install $PRISM_MODULE@$PRISM_VERSION (several minutes on 2 cores; log: $dir/build.log)"
    if ! GOBIN="$dir/bin" GOMODCACHE="$gocache/mod" GOCACHE="$gocache/build" GOPATH="$gocache/path" \
        GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath" \
        go install -ldflags="-s -w" "$PRISM_MODULE@$PRISM_VERSION" >"$dir/build.log" 2>&1; then
      show_log_tail prism "$dir/build.log"
      die "prism: go install failed"
    fi
    [[ -x "$(prism_bin)" ]] || die "prism: $(prism_bin) missing after go install"
    mark_complete "$dir"
    report_fetch "prism $PRISM_VERSION (binary $(size_of "$(prism_bin)"), module+build caches $(size_of "$gocache"))" "$t0" "$dir"
    if [[ "${WHYLAKE_KEEP_GO_CACHE:-0}" != 1 ]]; then
      GOMODCACHE="$gocache/mod" GOCACHE="$gocache/build" GOPATH="$gocache/path" GOTOOLCHAIN=local \
        go clean -modcache -cache >/dev/null 2>&1 || true
      chmod -R u+w "$gocache" 2>/dev/null || true
      rm -rf "$gocache"
    fi
  fi
  if [[ "${WHYLAKE_PRISM_STAGE_BEAM_CACHE:-0}" == 1 ]]; then prism_stage_beam_cache; fi
}

prism_stage_beam_cache() {
  local arch os name bincache="$HOME/.apache_beam/cache/prism/bin"
  os="$(uname -s | tr '[:upper:]' '[:lower:]')"
  case "$(uname -m)" in x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
  name="apache_beam-v$BEAM_PY_VERSION-prism-$os-$arch"
  mkdir -p "$bincache"
  cp "$(prism_bin)" "$bincache/$name.tmp" && mv -f "$bincache/$name.tmp" "$bincache/$name"
  local py; py="$(command -v python3 || python_bin)"
  "$py" - "$bincache/$name" <<'EOF'
import os, sys, zipfile
binary = sys.argv[1]
with zipfile.ZipFile(binary + ".zip.tmp", "w", zipfile.ZIP_DEFLATED) as z:
    z.write(binary, os.path.basename(binary))
os.replace(binary + ".zip.tmp", binary + ".zip")
EOF
  log "prism: staged for Beam at $bincache/$name(.zip)"
}
