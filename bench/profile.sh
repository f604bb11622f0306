#!/usr/bin/env bash
# Profiles the server under one load: starts a fresh release server (memory store), runs
# `switchboard bench` against it, and samples the server with `perf record` during the
# measured seconds. Prints the top functions by self time (flat profile: release builds have
# no frame pointers, so call stacks would be guesses).
# Usage: bench/profile.sh ws|sse|tcp|w2|grpc [seconds]   (needs `perf`; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-ws}
secs=${2:-6}
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }
# The profiling profile is the release build with symbols and line tables (release ships
# stripped).
cargo build --profile profiling --locked -q
# SWITCHBOARD_BIN profiles another build (say, one from before a change).
bin=${SWITCHBOARD_BIN:-./target/profiling/switchboard}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); tcp_port=$(free_port); grpc_port=$(free_port)
out=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$out"' EXIT
"$bin" serve --tcp "127.0.0.1:$tcp_port" --udp off --mqtt off --grpc "127.0.0.1:$grpc_port" --http "127.0.0.1:$port" --store memory \
  --publish-rate 0 --connection-rate 0 --log warn &
pid=$!
for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
case $what in
  ws)  args=("ws://127.0.0.1:$port/ws?room=p" -c 100 -p 10 --window 32) ;;
  sse) args=("http://127.0.0.1:$port/events?room=p" -c 100 -p 10 --window 32) ;;
  tcp) args=("tcp://127.0.0.1:$tcp_port/p" -c 100 -p 10 --window 32) ;;
  w2)  args=("ws://127.0.0.1:$port/ws?room=p" -c 1000 -p 1 --rate 1000) ;;
  grpc) args=("grpc://127.0.0.1:$grpc_port/p" -c 100 -p 10 --window 32) ;;
  *) echo "usage: $0 ws|sse|tcp|w2|grpc [seconds]" >&2; exit 2 ;;
esac
./target/profiling/switchboard bench "${args[@]}" --server-pid "$pid" --duration "$secs" --warmup 2 &
bench_pid=$!
sleep 2.5 # connections open and the warm-up is under way
perf record -q -F 997 -p "$pid" -o "$out/perf.data" -- sleep "$((secs - 1))" 2>/dev/null
wait $bench_pid
report() { perf report -i "$out/perf.data" --no-children --stdio "$@" 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | sed -E 's/ +- +- +$//; s/ +$//'; }
echo "== where the server's samples fall (user space = switchboard; kernel = syscalls, TCP, scheduler)"
report --sort dso | head -8
echo "== top functions by self time"
report --sort symbol --percent-limit 0.7 | head -45
