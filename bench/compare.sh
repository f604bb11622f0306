#!/usr/bin/env bash
# Side-by-side comparison in one run: switchboard and three peers we wrote (bench/peers/: the
# seed's FastAPI chat on uvicorn, a Node `ws` chat, a plain axum + tokio-tungstenite +
# broadcast chat, the last with Nagle on as axum leaves it and off), each under the same
# `switchboard bench` workloads, one server at a time. W3 (50 clients, each sending and
# waiting for its own broadcast copy) is a round trip per message: it is reported as round
# trips per second with p50 and p99.
# Installs the peers' dependencies (PyPI, npm, crates.io) into bench/peers/*/ on first use.
#   bench/compare.sh [seconds]        prints a markdown table with ratios to the axum peer
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
root=$PWD
out=$(mktemp -d)
trap 'kill ${pid:-0} 2>/dev/null || true' EXIT

cargo build --release --locked -q
(cd bench/peers/axum && cargo build --release -q)
[ -d bench/peers/node/node_modules/ws ] || (cd bench/peers/node && npm install --no-audit --no-fund --loglevel=error)
if [ ! -x bench/peers/fastapi/.venv/bin/uvicorn ]; then
  python3 -m venv bench/peers/fastapi/.venv
  bench/peers/fastapi/.venv/bin/pip install -q -r bench/peers/fastapi/requirements.txt
fi
bin=$root/target/release/switchboard

start() { # name port
  case $1 in
    switchboard) "$bin" serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$2" --store memory --publish-rate 0 --connection-rate 0 --log warn & ;;
    axum) bench/peers/axum/target/release/axum-broadcast-peer "127.0.0.1:$2" & ;;
    axum-nodelay) PEER_NODELAY=1 bench/peers/axum/target/release/axum-broadcast-peer "127.0.0.1:$2" & ;;
    node) node bench/peers/node/server.js "127.0.0.1:$2" & ;;
    fastapi) (cd bench/peers/fastapi && exec .venv/bin/uvicorn app:app --host 127.0.0.1 --port "$2" --log-level warning --ws websockets) & ;;
  esac
  pid=$!
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
  echo "$1 did not start" >&2; return 1
}

workload() { # name server port args...
  local w=$1 s=$2 port=$3; shift 3
  "$bin" bench "ws://127.0.0.1:$port/ws?room=$w" "$@" --duration "$secs" --warmup 2 \
    --server-pid "$pid" --json > "$out/$s.$w.json" 2>/dev/null || echo '{}' > "$out/$s.$w.json"
}

for s in switchboard axum axum-nodelay node fastapi; do
  for w in w1 w2 w3 idle; do
    port=$(python3 -c 'import socket; x=socket.socket(); x.bind(("127.0.0.1",0)); print(x.getsockname()[1])')
    start "$s" "$port"
    case $w in
      w1) workload w1 "$s" "$port" -c 100 -p 10 --window 32 ;;
      w2) workload w2 "$s" "$port" -c 1000 -p 1 --rate 1000 ;;
      w3) workload w3 "$s" "$port" -c 50 -p 50 --window 1 ;;
      idle) workload idle "$s" "$port" -c 1000 -p 1 --rate 1 ;;
    esac
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "done: $s $w" >&2
  done
done

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(s, w):
    try:
        return json.load(open(os.path.join(out, f"{s}.{w}.json")))
    except Exception:
        return {}
servers = ["switchboard", "axum", "axum-nodelay", "node", "fastapi"]
base = {w: load("axum", w) for w in ["w1", "w2", "w3", "idle"]}
fast = load("axum-nodelay", "w3")
def ratio(v, b):
    return f" ({v / b:.2f}×)" if v and b else ""
def rounds(w3):
    # Every message reaches all 50 clients: messages (round trips) per second.
    conns = w3.get("connections") or 0
    return (w3.get("deliveries_per_sec") or 0) / conns if conns else 0
print("ratios against axum (Nagle on, as axum leaves it); W3's round trips against axum-nodelay")
print("| server | W1 deliveries/s | W1 CPU/delivery | W2 delivered | W2 p99 | W3 round trips/s | W3 p50 | W3 p99 | idle RSS/conn |")
print("|---|---|---|---|---|---|---|---|---|")
for s in servers:
    w1, w2, w3, idle = load(s, "w1"), load(s, "w2"), load(s, "w3"), load(s, "idle")
    lat3 = w3.get("latency_ms") or {}
    d = w1.get("deliveries_per_sec") or 0
    cpu = w1.get("server_cpu_ns_per_delivery") or 0
    ratio2 = w2.get("delivered_ratio")
    p99 = (w2.get("latency_ms") or {}).get("p99") or 0
    rss = idle.get("server_rss_bytes_per_connection") or 0
    print(f"| {s} | {d:,.0f}{ratio(d, base['w1'].get('deliveries_per_sec'))} "
          f"| {cpu:,.0f} ns{ratio(cpu, base['w1'].get('server_cpu_ns_per_delivery'))} "
          f"| {ratio2 * 100 if ratio2 is not None else 0:.1f} % of {w2.get('sent', 0)} msgs "
          f"| {p99:,.1f} ms{ratio(p99, (base['w2'].get('latency_ms') or {}).get('p99'))} "
          f"| {rounds(w3):,.0f}{ratio(rounds(w3), rounds(fast))} | {lat3.get('p50', 0):,.1f} ms "
          f"| {lat3.get('p99', 0):,.1f} ms "
          f"| {rss / 1024:,.1f} KiB{ratio(rss, base['idle'].get('server_rss_bytes_per_connection'))} |")
PY
