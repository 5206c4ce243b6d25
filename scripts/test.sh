#!/usr/bin/env bash
# Runs every test of the project, installing what the tests need first.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== production build: the broker without the demo (cargo feature demo off)"
cargo check -p bzt --no-default-features --lib --bins --locked

echo "== cargo test"
cargo test --workspace --locked

# Schemathesis against the generated docs/openapi.json and a live development broker
# (target/debug/bzt, built by the cargo test above): conformance, no 5xx.
echo "== schemathesis"
bash scripts/schemathesis.sh 45

if [ -f sdk-js/package.json ]; then
  echo "== sdk-js: npm test"
  (cd sdk-js && npm test)
fi

if [ -f web-demo/package.json ]; then
  # The demo pages (login, phone simulator, bid tool) in Chromium against the real broker
  # (target/debug/bzt, built by the cargo test above).
  echo "== web-demo: npm test"
  (cd web-demo && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
