# Headless Chromium and its WebDriver from Debian's packages, for the tests that look at a page
# in a real browser (reports, the auditor page, the letter). Sourced by infra/services.sh.
# Nothing long-running: tests start `chromium --headless` themselves (see tests/browser.py).
# Debian's versions are pinned by the release (bookworm-security); the check is that both
# binaries exist and agree on their major version.

chromium_bin() { echo "${WHYLAKE_CHROMIUM:-/usr/bin/chromium}"; }
chromium_driver() { echo "${WHYLAKE_CHROMEDRIVER:-/usr/bin/chromedriver}"; }
chromium_port() { echo "-"; }
chromium_ports() { :; }
chromium_logs() { echo "$RUN/chromium/apt.log"; }
chromium_start() { :; }
chromium_version() { "$(chromium_bin)" --version 2>/dev/null | awk '{print $2}'; }
chromium_info() { echo "binary=$(chromium_bin) driver=$(chromium_driver) version=$(chromium_version)"; }
chromium_health() { [[ -x "$(chromium_bin)" && -x "$(chromium_driver)" ]]; }
chromium_status() {
  local state=missing
  chromium_health && state=installed
  printf '%-11s %-8s pid=%-8s port=%-6s health=%-9s rss=%-9s %s\n' \
    chromium "$state" - - "$([[ $state == installed ]] && echo ok || echo missing)" - "$(chromium_info)"
  [[ "$state" == installed ]]
}

chromium_fetch() {
  if chromium_health; then
    log "chromium $(chromium_version): installed at $(chromium_bin)"
    return
  fi
  need_cmd apt-get "install Debian's chromium and chromium-driver packages"
  local t0 sudo=(); t0="$(now)"
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  mkdir -p "$RUN/chromium"
  log "chromium: apt-get install chromium chromium-driver (log: $(chromium_logs))"
  if ! { "${sudo[@]}" apt-get update -q && \
         DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
           chromium chromium-driver; } >"$(chromium_logs)" 2>&1; then
    show_log_tail chromium "$(chromium_logs)"
    die "chromium: apt-get install failed"
  fi
  chromium_health || die "chromium: $(chromium_bin) or $(chromium_driver) missing after apt-get"
  log "chromium $(chromium_version): installed in $(elapsed "$t0") s"
}
