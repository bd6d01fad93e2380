#!/usr/bin/env bash
# Installs the Debian packages the test suite needs when missing: PostgreSQL server binaries
# (integration tests), chromium (the browser tests, driven by Playwright), and Node.js with npm
# (the JavaScript SDKs of the SDK matrix).
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "missing Debian packages ${missing[*]} and cannot install them (need root + apt-get)" >&2
    exit 1
fi
