# SeaweedFS: an S3-compatible object store (Apache-2.0; MinIO is AGPL and not used), built once
# from the Go module proxy and run as one `weed server` (master + volume + filer + S3 gateway)
# on 127.0.0.1. Sourced by infra/services.sh.
#
# `go install <module>@<version>` refuses SeaweedFS (its go.mod has a replace directive), so the
# module is downloaded with `go mod download` into a private module cache and built from a copy
# of its source, under nice (a 2-core machine is shared). Only the binary is kept.

seaweedfs_dir() { echo "$CACHE/seaweedfs/$SEAWEEDFS_VERSION"; }
seaweedfs_bin() { echo "$(seaweedfs_dir)/bin/weed"; }
seaweedfs_port() { echo "$SEAWEEDFS_S3_PORT"; }
seaweedfs_ports() {
  echo "$SEAWEEDFS_S3_PORT $SEAWEEDFS_MASTER_PORT $SEAWEEDFS_VOLUME_PORT $SEAWEEDFS_FILER_PORT" \
    "$((SEAWEEDFS_MASTER_PORT + 10000)) $((SEAWEEDFS_VOLUME_PORT + 10000)) $((SEAWEEDFS_FILER_PORT + 10000))" \
    "$((SEAWEEDFS_S3_PORT + 10000))"
}
seaweedfs_logs() { echo "$RUN/seaweedfs/stdout.log"; }
seaweedfs_info() { echo "s3=http://$HOST:$SEAWEEDFS_S3_PORT bucket=$SEAWEEDFS_BUCKET version=${SEAWEEDFS_VERSION:0:14}"; }

seaweedfs_fetch() {
  local dir; dir="$(seaweedfs_dir)"
  if is_complete "$dir" && [[ -x "$(seaweedfs_bin)" ]]; then
    log "seaweedfs: cached at $(seaweedfs_bin)"; return 0
  fi
  need_cmd go "install Go 1.26+ to build SeaweedFS from the Go module proxy"
  local t0; t0="$(now)"
  rm -rf "$dir"; mkdir -p "$dir/bin"
  local gocache="$CACHE/seaweedfs/.go"
  local goenv=(GOMODCACHE="$gocache/mod" GOCACHE="$gocache/build" GOPATH="$gocache/path"
               GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -trimpath")
  log "seaweedfs: building $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION under nice (several minutes on 2 cores; log: $dir/build.log)"
  local src
  if ! src="$(env "${goenv[@]}" go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" 2>>"$dir/build.log" \
      | awk -F'"' '/"Dir":/ { print $4 }')" || [[ -z "$src" ]]; then
    show_log_tail seaweedfs "$dir/build.log"; die "seaweedfs: go mod download failed"
  fi
  local work="$CACHE/seaweedfs/.src"
  rm -rf "$work"; cp -r "$src" "$work"; chmod -R u+w "$work"
  if ! (cd "$work" && env "${goenv[@]}" nice -n 10 go build -ldflags="-s -w" -o "$(seaweedfs_bin)" ./weed) \
      >>"$dir/build.log" 2>&1; then
    show_log_tail seaweedfs "$dir/build.log"; die "seaweedfs: go build failed"
  fi
  [[ -x "$(seaweedfs_bin)" ]] || die "seaweedfs: $(seaweedfs_bin) missing after go build"
  mark_complete "$dir"
  report_fetch "seaweedfs (binary $(size_of "$(seaweedfs_bin)"), caches $(size_of "$gocache"))" "$t0" "$dir"
  rm -rf "$work"
  if [[ "${WHYLAKE_KEEP_GO_CACHE:-0}" != 1 ]]; then
    env "${goenv[@]}" go clean -modcache -cache >/dev/null 2>&1 || true
    chmod -R u+w "$gocache" 2>/dev/null || true
    rm -rf "$gocache"
  fi
}

seaweedfs_start() {
  local run="$RUN/seaweedfs"
  mkdir -p "$run/data"
  # One static identity with every action: the credentials tests and jobs use (local only).
  cat >"$run/s3.json" <<EOF
{"identities": [{"name": "whylake",
  "credentials": [{"accessKey": "$SEAWEEDFS_ACCESS_KEY", "secretKey": "$SEAWEEDFS_SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
  # -master.telemetry=false: nothing leaves the machine. Small volumes: test data is small.
  start_daemon seaweedfs "$run/stdout.log" "$(seaweedfs_bin)" -logtostderr server \
    -ip="$HOST" -ip.bind="$HOST" -dir="$run/data" \
    -master.port="$SEAWEEDFS_MASTER_PORT" -master.volumeSizeLimitMB=256 -master.telemetry=false \
    -volume.port="$SEAWEEDFS_VOLUME_PORT" -volume.max=0 \
    -filer -filer.port="$SEAWEEDFS_FILER_PORT" \
    -s3 -s3.port="$SEAWEEDFS_S3_PORT" -s3.config="$run/s3.json"
}

seaweedfs_health() {
  # The S3 gateway answers, and the bucket exists (created on first health check).
  port_open "$SEAWEEDFS_S3_PORT" || return 1
  local py; py="$(python_bin)"
  [[ -n "$py" ]] || return 1
  "$py" "$INFRA_DIR/s3_check.py" "http://$HOST:$SEAWEEDFS_S3_PORT" "$SEAWEEDFS_BUCKET" \
    "$SEAWEEDFS_ACCESS_KEY" "$SEAWEEDFS_SECRET_KEY"
}
