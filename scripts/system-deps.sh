#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (PostgreSQL server binaries) when missing.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL server binaries (Debian package postgresql)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
    echo "PostgreSQL server binaries not found and cannot install them (need root + apt-get)" >&2
    exit 1
fi
