#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# A C toolchain builds SQLite (bundled) and jemalloc.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The browser test over HTTPS makes its certificate with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# MQTT tests drive the server with Debian's mosquitto clients.
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# tests/proxy.rs puts Debian's nginx (with its stream module, for the PROXY protocol) in front.
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need_apt+=(libnginx-mod-stream)
# gRPC tests drive the server with Python's grpcio, in a venv (Debian's Python takes no pip
# installs of its own).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

venv=target/grpc-venv
if ! cmp -s tests/grpc/requirements.txt "$venv/requirements.txt"; then
  echo "== installing grpcio into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/grpc/requirements.txt
  cp tests/grpc/requirements.txt "$venv/requirements.txt"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace --all-targets
echo "== browser tests (playwright-core + Debian chromium)"
# A hung test fails after two minutes instead of stalling the run.
(cd tests/e2e && { { [ -d node_modules/playwright-core ] && [ -d node_modules/mqtt ] && [ -d node_modules/ws ] && [ -d node_modules/typescript ]; } || npm ci --no-audit --no-fund --loglevel=error; } \
  && timeout 900 node --test --test-timeout=120000)
echo "== schemathesis against /openapi.json"
./scripts/openapi.sh
echo "== autobahn testsuite 1-11 against /echo"
./scripts/autobahn.sh
