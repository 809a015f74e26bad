#!/usr/bin/env bash
# Prepares the browser test: Debian's Chromium and the npm packages (playwright-core). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# node_modules is stale when it was installed from another package-lock.json.
if ! cmp -s package-lock.json node_modules/.setup-lock.json 2>/dev/null; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.setup-lock.json
fi
