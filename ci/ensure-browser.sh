#!/usr/bin/env bash
# Make sure Debian's headless browser for the UI tests is installed: chromium and its chromedriver, from Debian's
# packages (apt-get), never a downloaded browser. Installs them when missing (needs root, as in CI); fails loudly
# otherwise -- the UI tests never skip.
set -euo pipefail

CHROMIUM=${AIRFLOW_RUNWAY_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${AIRFLOW_RUNWAY_CHROMEDRIVER:-/usr/bin/chromedriver}

have_browser() { [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; }

if ! have_browser; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "The UI tests need $CHROMIUM and $CHROMEDRIVER: run as root" \
            "'apt-get update && apt-get install -y chromium chromium-driver'" >&2
        exit 1
    fi
    echo "Browser: installing Debian's chromium and chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
have_browser || { echo "chromium/chromedriver still missing after apt-get install" >&2; exit 1; }
# chromium's wrapper script prints a harmless shell warning on some hosts: keep only the version line.
echo "Browser: $("$CHROMEDRIVER" --version | head -n 1)"
