#!/usr/bin/env bash
# Side by side: two server builds alternating on the same workloads, driven by the same load
# generator, so a change is judged by ratios from one run on this noisy 2-core machine.
# Usage: bench/ab.sh BEFORE_BIN AFTER_BIN [rounds] [seconds]
#   e.g. git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release)
#        bench/ab.sh /tmp/before/target/release/switchboard target/release/switchboard 3
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2 rounds=${3:-3} secs=${4:-8}
cargo build --release --locked -q -p switchboard-bench
gen=./target/release/switchboard-bench
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
run() { # bin label name url-template args...   (PORT = HTTP, TPORT = TCP chat)
  local bin=$1 label=$2 name=$3 template=$4; shift 4
  local port tport pid url
  port=$(free_port); tport=$(free_port)
  # Builds from before the per-connection limit have no --connection-rate.
  local limits=(--publish-rate 0)
  "$bin" serve --help | grep -q -- --connection-rate && limits+=(--connection-rate 0)
  "$bin" serve --help | grep -q -- --mqtt && limits+=(--mqtt off)
  "$bin" serve --help | grep -q -- --grpc && limits+=(--grpc off)
  "$bin" serve --tcp "127.0.0.1:$tport" --udp off --http "127.0.0.1:$port" --store memory \
    "${limits[@]}" --log warn &
  pid=$!
  for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  url=${template//TPORT/$tport}; url=${url//PORT/$port}
  echo "== $label $name"
  "$gen" "$url" "$@" --server-pid "$pid" --duration "$secs" --warmup 2 \
    | grep -E "deliveries/s|latency|server CPU|server RSS"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq 1 "$rounds"); do
  for side in before after; do
    bin=$before; [ "$side" = after ] && bin=$after
    run "$bin" "$side" W1 "ws://127.0.0.1:PORT/ws?room=w1" -c 100 -p 10 --window 32
    run "$bin" "$side" W2 "ws://127.0.0.1:PORT/ws?room=w2" -c 1000 -p 1 --rate 1000
    run "$bin" "$side" W3 "ws://127.0.0.1:PORT/ws?room=w3" -c 50 -p 50 --window 1
    run "$bin" "$side" "W1 tcp" "tcp://127.0.0.1:TPORT/w1t" -c 100 -p 10 --window 32
    run "$bin" "$side" idle "ws://127.0.0.1:PORT/ws?room=idle" -c 1000 -p 1 --rate 1
  done
done
