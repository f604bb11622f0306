#!/usr/bin/env bash
# Holds N concurrent idle WebSocket connections (default 100,000) on one fresh release server
# and reports its RSS per connection: members of one room (`room`, the default: the join storm,
# then one message a second to all of them) or bare `/echo` connections (`echo`). The server and the load generator each need N open
# files, so this raises the open-files limit first; when the machine's hard limit is lower
# and cannot be raised (no CAP_SYS_RESOURCE, e.g. in a container), it says so and opens as
# many as fit. Connections are spread over 127.0.0.x source addresses (~25k each) so the
# ephemeral port range is not the limit.
# What a machine needs for 100,000: an open-files limit above 101,000 for the server and for the
# generator (`ulimit -n`, or LimitNOFILE= in a unit; raising the hard limit needs root or
# CAP_SYS_RESOURCE), 4 source addresses (127.0.0.1-4, each ~28k ephemeral ports;
# net.ipv4.ip_local_port_range widens that), and ~1-1.5 GB of RAM for both processes.
# Usage: [SWITCHBOARD_BIN=path] bench/many.sh [connections] [room|echo]   (loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-100000}
kind=${2:-room}
need=$((want + 1000))
if ! ulimit -n "$need" 2>/dev/null; then
  ulimit -n "$(ulimit -Hn)"
  echo "note: cannot raise the open-files limit to $need (hard limit $(ulimit -Hn));" \
    "running $(( $(ulimit -n) - 1000 )) connections instead" >&2
fi
n=$(( $(ulimit -n) - 1000 < want ? $(ulimit -n) - 1000 : want ))
sources=$(( n / 25000 + 1 ))
# SWITCHBOARD_BIN measures another build (say, one from before a change) with this generator.
cargo build --release --locked -q
bin=${SWITCHBOARD_BIN:-./target/release/switchboard}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$port" --store memory --log warn \
  --max-connections "$need" --max-connections-per-ip "$need" \
  --publish-rate 0 --connection-rate 0 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
if [ "$kind" = echo ]; then
  echo "== $n idle /echo connections from $sources source addresses"
  ./target/release/switchboard bench "ws://127.0.0.1:$port/echo" --mode echo -c "$n" --rate 1 --sources "$sources" \
    --duration 5 --warmup 1 --server-pid "$pid"
else
  echo "== $n members of one room from $sources source addresses, one message a second to all"
  ./target/release/switchboard bench "ws://127.0.0.1:$port/ws?room=many" -c "$n" -p 1 --rate 1 --sources "$sources" \
    --duration 5 --warmup 1 --server-pid "$pid"
fi
echo "server: $(grep -E 'VmRSS|Threads' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
