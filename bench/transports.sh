#!/usr/bin/env bash
# Transports side by side, one run, the same generator and server, a fresh server for each
# workload: W1 (100 receivers, 10 publishers, window 32), W2/10 (100 receivers, 1 publisher at
# 1,000 msg/s) and idle (1,000 receivers, 1 msg/s), the shapes of bench/compare.sh. Ratios are
# against the first transport named.
#   ws      the plain WebSocket chat, ws://…/ws?room=ROOM (P of the N publish)
#   grpc    grpc://…/ROOM: one Chat stream per connection, on a connection of its own
#   sse     http://…/events?room=ROOM listeners; P more publishers POST to the room
#   sse-ws  the same listeners, P WebSocket publishers (`--publish-ws`): SSE's own cost
#   bench/transports.sh SECONDS REPETITIONS TRANSPORT...   prints a markdown table (medians)
# bench/grpc.sh and bench/sse.sh run it for gRPC (issue 16) and SSE (issue 17).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
reps=${2:-3}
shift 2 || true
transports=("${@:-ws}")
out=$(mktemp -d)
trap 'kill ${pid:-0} 2>/dev/null || true' EXIT
cargo build --release --locked -q
bin=$PWD/target/release/switchboard
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # http-port grpc-port
  "$bin" serve --tcp off --udp off --mqtt off --http "127.0.0.1:$1" --grpc "127.0.0.1:$2" \
    --store memory --publish-rate 0 --connection-rate 0 --log warn &
  pid=$!
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
  echo "the server did not start" >&2; return 1
}

for r in $(seq 1 "$reps"); do
  for t in "${transports[@]}"; do
    for w in w1 w2s idle; do
      http=$(free_port); grpc=$(free_port)
      start "$http" "$grpc"
      case $w in
        w1) args=(-c 100 -p 10 --window 32) ;;
        w2s) args=(-c 100 -p 1 --rate 1000) ;;
        idle) args=(-c 1000 -p 1 --rate 1) ;;
      esac
      case $t in
        ws) url="ws://127.0.0.1:$http/ws?room=$w" ;;
        grpc) url="grpc://127.0.0.1:$grpc/$w" ;;
        sse) url="http://127.0.0.1:$http/events?room=$w" ;;
        sse-ws) url="http://127.0.0.1:$http/events?room=$w"
          args+=(--publish-ws "ws://127.0.0.1:$http/ws?room=$w") ;;
        *) echo "unknown transport $t (ws, grpc, sse, sse-ws)" >&2; exit 2 ;;
      esac
      "$bin" bench "$url" "${args[@]}" --duration "$secs" --warmup 2 \
        --server-pid "$pid" --json > "$out/$t.$w.$r.json" 2>/dev/null || echo '{}' > "$out/$t.$w.$r.json"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      echo "done: $r $t $w" >&2
    done
  done
done

PYTHONPATH=bench PYTHONDONTWRITEBYTECODE=1 python3 - "$out" "$reps" "${transports[@]}" <<'PY'
import sys
from medians import medians, ratio
out, reps, transports = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = medians(out, reps)
rows = {}
for t in transports:
    rows[t] = dict(
        d=med(t, "w1", lambda j: j.get("deliveries_per_sec")),
        cpu=med(t, "w1", lambda j: j.get("server_cpu_ns_per_delivery")),
        p99w1=med(t, "w1", lambda j: j["latency_ms"]["p99"]),
        w2s=med(t, "w2s", lambda j: j.get("delivered_ratio")),
        p99s=med(t, "w2s", lambda j: j["latency_ms"]["p99"]),
        cpus=med(t, "w2s", lambda j: j.get("server_cpu_ns_per_delivery")),
        rss=med(t, "idle", lambda j: j.get("server_rss_bytes_per_connection")),
    )
b = rows[transports[0]]
print(f"medians of {reps} runs; ratios against {transports[0]}")
print("| transport | W1 deliveries/s | W1 p99 | W1 CPU/delivery | W2/10 delivered | W2/10 p99 | W2/10 CPU/delivery | idle RSS/conn |")
print("|---|---|---|---|---|---|---|---|")
for t, v in rows.items():
    print(f"| {t} | {v['d']:,.0f}{ratio(v['d'], b['d'])} | {v['p99w1']:,.1f} ms "
          f"| {v['cpu']:,.0f} ns{ratio(v['cpu'], b['cpu'])} "
          f"| {v['w2s'] * 100:.1f} % | {v['p99s']:,.1f} ms "
          f"| {v['cpus']:,.0f} ns{ratio(v['cpus'], b['cpus'])} "
          f"| {v['rss'] / 1024:,.1f} KiB{ratio(v['rss'], b['rss'])} |")
PY
