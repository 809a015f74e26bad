#!/usr/bin/env bash
# Prepares the browser test and the pomelo client test: Debian's Chromium, Node.js and npm, and
# the npm packages (playwright-core; pomelo-cocos2d-js and ws). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's packages for what is missing: Chromium, and Node.js with npm to run the test.
PACKAGES=()
[ -x /usr/bin/chromium ] || PACKAGES+=(chromium)
command -v node >/dev/null || PACKAGES+=(nodejs)
command -v npm >/dev/null || PACKAGES+=(npm)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  echo "setup: installing ${PACKAGES[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

# node_modules is stale when it was installed from another package-lock.json.
if ! cmp -s package-lock.json node_modules/.setup-lock.json 2>/dev/null; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.setup-lock.json
fi
