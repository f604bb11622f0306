#!/usr/bin/env bash
# Holds N concurrent idle WebSocket connections (default 100,000) on one fresh release server
# and reports its RSS per connection. The server and the load generator each need N open
# files, so this raises the open-files limit first; when the machine's hard limit is lower
# and cannot be raised (no CAP_SYS_RESOURCE, e.g. in a container), it says so and opens as
# many as fit. Connections are spread over 127.0.0.x source addresses (~25k each) so the
# ephemeral port range is not the limit.
# Usage: bench/many.sh [connections]   (loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-100000}
need=$((want + 1000))
if ! ulimit -n "$need" 2>/dev/null; then
  ulimit -n "$(ulimit -Hn)"
  echo "note: cannot raise the open-files limit to $need (hard limit $(ulimit -Hn));" \
    "running $(( $(ulimit -n) - 1000 )) connections instead" >&2
fi
n=$(( $(ulimit -n) - 1000 < want ? $(ulimit -n) - 1000 : want ))
sources=$(( n / 25000 + 1 ))
cargo build --release --locked -q
bin=./target/release/switchboard
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$port" --store memory --log warn \
  --max-connections "$need" --max-connections-per-ip "$need" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo "== $n idle /echo connections from $sources source addresses"
"$bin" bench "ws://127.0.0.1:$port/echo" --mode echo -c "$n" --rate 1 --sources "$sources" \
  --duration 5 --warmup 1 --server-pid "$pid"
echo "server: $(grep -E 'VmRSS|Threads' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
