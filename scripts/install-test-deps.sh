#!/usr/bin/env bash
# Installs what the test suite needs on a bare Debian machine; skips what is present.
# Idempotent; uses sudo only when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v openssl >/dev/null       || need_apt+=(openssl)
command -v redis-server >/dev/null  || need_apt+=(redis-server)
command -v redis-cli >/dev/null     || need_apt+=(redis-tools)
command -v chromium >/dev/null      || need_apt+=(chromium)
command -v node >/dev/null          || need_apt+=(nodejs npm)
# The deployment test puts Debian's nginx (TLS, WebSocket, SSE) in front of the broker.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
# Screenshots made in the browser tests must show the Chinese, not boxes.
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need_apt+=(fonts-noto-cjk)
# The README's Quick start and the deployment test use them.
command -v curl >/dev/null          || need_apt+=(curl)
command -v jq >/dev/null            || need_apt+=(jq)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The broker must not pick up a system Redis started by the package: tests start their own. Nor
# does the deployment test want the package's nginx on port 80: it starts its own on free ports.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl stop redis-server >/dev/null 2>&1 || true
  $SUDO systemctl stop nginx >/dev/null 2>&1 || true
fi

# SM4-GCM cross-check (OpenSSL 3.0's CLI has none).
if ! python3 -c 'import cryptography' >/dev/null 2>&1; then
  echo "install-test-deps: pip install cryptography"
  python3 -m pip install -q cryptography
fi

# An independent DER reader for the GB/T 38540 seal structures (crates/bzt-seal/tests).
if ! python3 -c 'import pyasn1' >/dev/null 2>&1; then
  echo "install-test-deps: pip install pyasn1"
  python3 -m pip install -q pyasn1
fi

# The schema-driven attack on the live broker (scripts/schemathesis.sh).
if ! python3 -c 'import schemathesis' >/dev/null 2>&1; then
  echo "install-test-deps: pip install schemathesis"
  python3 -m pip install -q 'schemathesis>=4,<5'
fi

# The generated OpenAPI document is validated by an independent validator, and real answers
# are checked against its schemas with Python `jsonschema` (a dependency of the validator):
# tests/openapi_generated.rs.
if ! python3 -c 'import openapi_spec_validator, jsonschema' >/dev/null 2>&1; then
  echo "install-test-deps: pip install openapi-spec-validator"
  python3 -m pip install -q openapi-spec-validator
fi

# Browser tests of the SDK.
if [ -f sdk-js/package-lock.json ] && [ ! -d sdk-js/node_modules ]; then
  echo "install-test-deps: npm ci (sdk-js)"
  (cd sdk-js && npm ci --no-audit --no-fund --loglevel=error)
fi
