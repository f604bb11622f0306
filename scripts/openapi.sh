#!/usr/bin/env bash
# schemathesis against a real server's /openapi.json: every operation but the SSE stream, with
# the checks in tests/openapi/schemathesis.toml. Uses target/api-venv (made here when missing,
# pinned by tests/openapi/requirements.txt) and target/debug/switchboard (cargo build first).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/api-venv
if ! cmp -s tests/openapi/requirements.txt "$venv/requirements.txt"; then
  echo "== installing schemathesis into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt
  cp tests/openapi/requirements.txt "$venv/requirements.txt"
fi
bin=${SWITCHBOARD_BIN:-target/debug/switchboard}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=schemathesis-key-$RANDOM$RANDOM$RANDOM
log=$(mktemp)
"$bin" serve --store memory --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$port" \
  --api-key "$key" --log warn 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
# Nicks the users/{nick} operations can reach (tests/openapi/schemathesis.toml names them):
# `held` keeps an SSE stream open for direct messages; `kicked` comes back after each kick.
# Bounded: the streams end with the run (the trap) or after 900 s, the loop after 2,000 kicks.
timeout 900 curl -sN -H "X-API-Key: $key" "http://127.0.0.1:$port/events?room=fuzz&nick=held" >/dev/null 2>&1 &
held=$!
( for _ in $(seq 1 2000); do
    timeout 900 curl -sN -H "X-API-Key: $key" "http://127.0.0.1:$port/events?room=fuzz&nick=kicked" >/dev/null 2>&1 || true
  done ) &
kicked=$!
trap 'kill $pid $held $kicked 2>/dev/null || true; pkill -P $kicked 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -s -H "X-API-Key: $key" "http://127.0.0.1:$port/rooms/fuzz/presence" | grep -q '"kicked"' && break
  sleep 0.1
done
cd tests/openapi
# One worker: CPython 3.11's ast module is not thread-safe, which hypothesis trips over.
SWITCHBOARD_TEST_API_KEY=$key timeout 900 "../../$venv/bin/schemathesis" run \
  "http://127.0.0.1:$port/openapi.json" --workers 1 --seed "${SEED:-1}" "$@"
if grep -q 'ERROR\|panicked' "$log"; then
  echo "the server logged errors under schemathesis:" >&2
  cat "$log" >&2
  exit 1
fi
