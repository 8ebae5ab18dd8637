#!/usr/bin/env bash
# Headless Chromium and its driver for the report's browser test (Debian packages, so nothing
# downloads a browser at test time). Idempotent; refreshes the package lists only when an
# install from the current lists fails.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# fonts: without them a headless page renders its text as boxes
install_browser() { apt-get install -y -qq chromium chromium-driver fonts-liberation fonts-dejavu-core >/dev/null; }
if ! install_browser 2>/dev/null; then
  apt-get update -qq >/dev/null
  install_browser
fi
echo "installed $(chromium --version 2>/dev/null | head -1)"
