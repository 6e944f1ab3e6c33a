# MLflow: a tracking server with a model registry (SQLite backend store, local artifact store
# served through the server), from the released mlflow package on PyPI, installed into its own
# venv under the cache so the server's dependencies (Flask, alembic, gunicorn, ...) stay out of
# the project's venv (which holds only mlflow-skinny, the client). Sourced by infra/services.sh.

mlflow_home() { echo "$CACHE/mlflow/$MLFLOW_VERSION"; }
mlflow_port() { echo "$MLFLOW_PORT"; }
mlflow_ports() { echo "$MLFLOW_PORT"; }
mlflow_logs() { echo "$RUN/mlflow/server.log"; }
mlflow_info() { echo "tracking_uri=http://$HOST:$MLFLOW_PORT version=$MLFLOW_VERSION"; }

mlflow_python() {  # a Python 3.11 for the server's venv
  if [[ -n "${WHYLAKE_MLFLOW_PYTHON:-}" ]]; then echo "$WHYLAKE_MLFLOW_PYTHON"; return; fi
  command -v python3.11 || command -v python3 || die "mlflow: no python3.11 on PATH"
}

mlflow_fetch() {
  local dest; dest="$(mlflow_home)"
  if is_complete "$dest"; then log "mlflow $MLFLOW_VERSION: cached at $dest"; return 0; fi
  local t0; t0="$(now)"
  # A venv holds absolute paths, so it is built where it lives; .complete marks it finished.
  rm -rf "$dest"; mkdir -p "$dest"
  log "mlflow: pip install mlflow==$MLFLOW_VERSION into its own venv ($dest/venv)"
  "$(mlflow_python)" -m venv "$dest/venv"
  "$dest/venv/bin/python" -m pip install --quiet --disable-pip-version-check "mlflow==$MLFLOW_VERSION" \
    >"$dest/pip.log" 2>&1 || { tail -n 30 "$dest/pip.log" >&2; die "mlflow: pip install failed"; }
  "$dest/venv/bin/python" -m pip check >>"$dest/pip.log" 2>&1 \
    || log "mlflow: pip check reported conflicts (see $dest/pip.log)"
  mark_complete "$dest"
  report_fetch "mlflow $MLFLOW_VERSION" "$t0" "$dest"
}

mlflow_start() {
  local run="$RUN/mlflow"
  mkdir -p "$run/artifacts"
  # `python -m mlflow`, not the venv's `mlflow` script: a script's shebang holds the path the
  # venv was built at, which breaks when the cache is reached through another (symlinked) path.
  start_daemon mlflow "$(mlflow_logs)" "$(mlflow_home)/venv/bin/python" -m mlflow server \
    --backend-store-uri "sqlite:///$run/mlflow.db" \
    --artifacts-destination "$run/artifacts" --serve-artifacts \
    --host "$HOST" --port "$MLFLOW_PORT" --workers 1
}

mlflow_health() {
  local py; py="$(python_bin)"
  "$py" - "$HOST" "$MLFLOW_PORT" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}
