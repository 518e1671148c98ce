#!/usr/bin/env bash
# Chromium from Debian's packages, for the tests that open the HTML figure in a real headless
# browser (tests/test_plot_html_browser.py); nothing else needs it. Idempotent; as root.
# scripts/test.sh runs it (LANDSCAPE_BROWSER=0 skips it, and those tests skip with a reason).
set -euo pipefail

log() { printf '[browser] %s\n' "$*"; }

if command -v chromium >/dev/null 2>&1; then
  log "chromium ready ($(command -v chromium))"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "chromium is missing: apt-get install chromium as root (its tests skip until then)"
  exit 1
fi
log "apt-get install chromium (a minute)"
export DEBIAN_FRONTEND=noninteractive
out=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
  </dev/null >"$out" 2>&1; then
  tail -n 25 "$out" >&2
  log "apt-get install chromium failed (log: $out)"
  exit 1
fi
rm -f "$out"
log "chromium ready ($(command -v chromium))"
