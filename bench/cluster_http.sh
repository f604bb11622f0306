#!/usr/bin/env bash
# HTTP publishing into a one-node cluster (--redis, a redis-server of its own per run), builds
# side by side: what a cluster publish's answer costs. SSE listeners and HTTP publishers on the
# node: W1 (100 listeners, 10 publishers, window 32: throughput bound by the POST round trip)
# and W2/10 (100 listeners, 1 publisher at 1,000 msg/s: latency). Ratios against the first.
#   bench/cluster_http.sh SECONDS REPETITIONS LABEL=BINARY...   prints a markdown table
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
reps=${2:-3}
shift 2 || true
[ $# -gt 0 ] || { echo "name at least one LABEL=BINARY" >&2; exit 2; }
out=$(mktemp -d)
trap 'kill ${pid:-0} ${rpid:-0} 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; return 1; }
labels=()
for r in $(seq 1 "$reps"); do
  for pair in "$@"; do
    label=${pair%%=*}; bin=${pair#*=}
    [ "$r" = 1 ] && labels+=("$label")
    for w in w1 w2s; do
      rport=$(free_port); http=$(free_port)
      redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        >/dev/null 2>&1 &
      rpid=$!
      wait_port "$rport"
      "$bin" serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$http" \
        --redis "redis://127.0.0.1:$rport" --publish-rate 0 --connection-rate 0 --log warn &
      pid=$!
      wait_port "$http"
      case $w in
        w1) args=(-c 100 -p 10 --window 32) ;;
        w2s) args=(-c 100 -p 1 --rate 1000) ;;
      esac
      "$bin" bench "http://127.0.0.1:$http/events?room=$w" "${args[@]}" --duration "$secs" \
        --warmup 2 --server-pid "$pid" --json > "$out/$label.$w.$r.json" 2>/dev/null \
        || echo '{}' > "$out/$label.$w.$r.json"
      kill "$pid" "$rpid"; wait "$pid" "$rpid" 2>/dev/null || true
      echo "done: $r $label $w" >&2
    done
  done
done
PYTHONPATH=bench PYTHONDONTWRITEBYTECODE=1 python3 - "$out" "$reps" "${labels[@]}" <<'PY'
import sys
from medians import medians, ratio
out, reps, labels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = medians(out, reps)
b = None
print(f"medians of {reps} runs; ratios against {labels[0]}")
print("| build | W1 deliveries/s | W1 p50 | W1 p99 | W2/10 delivered | W2/10 p50 | W2/10 p99 | W2/10 CPU/delivery |")
print("|---|---|---|---|---|---|---|---|")
for l in labels:
    v = dict(
        d=med(l, "w1", lambda j: j.get("deliveries_per_sec")),
        p50=med(l, "w1", lambda j: j["latency_ms"]["p50"]),
        p99=med(l, "w1", lambda j: j["latency_ms"]["p99"]),
        w2s=med(l, "w2s", lambda j: j.get("delivered_ratio")),
        p50s=med(l, "w2s", lambda j: j["latency_ms"]["p50"]),
        p99s=med(l, "w2s", lambda j: j["latency_ms"]["p99"]),
        cpus=med(l, "w2s", lambda j: j.get("server_cpu_ns_per_delivery")),
    )
    b = b or v
    print(f"| {l} | {v['d']:,.0f}{ratio(v['d'], b['d'])} | {v['p50']:,.2f} ms | {v['p99']:,.1f} ms "
          f"| {v['w2s'] * 100:.1f} % | {v['p50s']:,.2f} ms | {v['p99s']:,.1f} ms "
          f"| {v['cpus']:,.0f} ns{ratio(v['cpus'], b['cpus'])} |")
PY
