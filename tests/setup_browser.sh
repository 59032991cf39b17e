#!/usr/bin/env bash
# Installs headless Chromium (Debian packages) for the report test when it is missing.
# Best effort: without it the browser test skips with a reason.
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || echo "setup_browser: could not install chromium; the report browser test will skip"
fi
exit 0
