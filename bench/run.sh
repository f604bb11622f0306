#!/usr/bin/env bash
# Runs switchboard's own load generator against a fresh release server per workload and prints
# the reports. Usage: bench/run.sh [seconds] [all|stores]   (loopback only; the machine's 2 cores are shared
# by server and load generator, so compare ratios from one run, not absolute figures).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
only=${2:-all}
cargo build --release --locked -q
bin=./target/release/switchboard
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tcp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
redis_pid=
pid=
trap 'kill $pid 2>/dev/null || true; [ -n "$redis_pid" ] && kill $redis_pid 2>/dev/null; rm -rf "$data"' EXIT

serve() { # store [extra flags...]; TCP=ADDR in the environment also opens the TCP chat
  local store=$1; shift
  "$bin" serve --tcp "${TCP:-off}" --udp off --mqtt off --grpc off --http "127.0.0.1:$port" --store "$store" --data-dir "$data" \
    --publish-rate 0 --connection-rate 0 --log warn "$@" &
  pid=$!
  for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
bench() { # name, args...
  local name=$1; shift
  echo "== $name"
  "$bin" bench "$@" --server-pid "$pid" --duration "$secs" --warmup 2
}

if [ "$only" = all ]; then
serve memory
bench "W1: 100 connections, 10 publishers, window 32" "ws://127.0.0.1:$port/ws?room=w1" -c 100 -p 10 --window 32
stop; serve memory
bench "W2: 1000 connections, 1 publisher at 1000 msg/s" "ws://127.0.0.1:$port/ws?room=w2" -c 1000 -p 1 --rate 1000
stop; serve memory
bench "W3: 50 clients, each waits for its own broadcast copy" "ws://127.0.0.1:$port/ws?room=w3" -c 50 -p 50 --window 1
stop; TCP="127.0.0.1:$tcp_port" serve memory
bench "W1 over TCP: 100 connections, 10 publishers, window 32" "tcp://127.0.0.1:$tcp_port/w1t" -c 100 -p 10 --window 32
stop; serve memory
bench "W1 over SSE: 100 listeners, 10 HTTP publishers, window 32" "http://127.0.0.1:$port/events?room=w1s" -c 100 -p 10 --window 32
stop; serve memory
bench "idle: 2000 echo connections (memory per connection)" "ws://127.0.0.1:$port/echo" --mode echo -c 2000 --rate 1
stop
fi

# The three stores side by side. Redis: a throw-away redis-server on a free port, persistence
# off (its defaults otherwise), so this measures the round trip through Redis, not its disk.
stores="memory sqlite"
if command -v redis-server >/dev/null 2>&1; then
  redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tcp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$data" >/dev/null &
  redis_pid=$!
  stores="$stores redis"
else
  echo "(redis-server not installed: skipping the redis store)"
fi
for store in $stores; do
  if [ "$store" = redis ]; then serve redis --redis "redis://127.0.0.1:$redis_port"; else serve "$store"; fi
  bench "publish-heavy, store=$store: 10 connections all publishing, window 32" "ws://127.0.0.1:$port/ws?room=p" -c 10 -p 10 --window 32
  stop
done
