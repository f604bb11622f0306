#!/usr/bin/env bash
# MQTT fan-out, switchboard against Mosquitto (Debian `mosquitto`), side by side in one run:
# the same generator (`switchboard bench mqtt://…`, QoS 0, rumqttc clients) and the W1/W2/idle
# shapes of bench/compare.sh, one server at a time on loopback, fresh for each workload.
# W2 asks for 10^6 deliveries/s, more than Mosquitto can give, so `w2s` is W2 at a tenth
# (100 connections, one publisher at 1,000 msg/s), which both can carry.
#   bench/mqtt.sh [seconds] [repetitions]    prints a markdown table (medians of repetitions)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
reps=${2:-3}
out=$(mktemp -d)
trap 'kill ${pid:-0} 2>/dev/null || true' EXIT
command -v mosquitto >/dev/null || { echo "needs Debian's mosquitto (apt-get install mosquitto)" >&2; exit 1; }
cargo build --release --locked -q
bin=$PWD/target/release/switchboard
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name port
  case $1 in
    switchboard) "$bin" serve --tcp off --udp off --http off --grpc off --mqtt "127.0.0.1:$2" --store memory \
      --publish-rate 0 --connection-rate 0 --log warn & ;;
    mosquitto) mosquitto -p "$2" >/dev/null 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
  echo "$1 did not start" >&2; return 1
}

for r in $(seq 1 "$reps"); do
  for s in switchboard mosquitto; do
    for w in w1 w2 w2s idle; do
      port=$(free_port)
      start "$s" "$port"
      case $w in
        w1) args=(-c 100 -p 10 --window 32) ;;
        w2) args=(-c 1000 -p 1 --rate 1000) ;;
        w2s) args=(-c 100 -p 1 --rate 1000) ;;
        idle) args=(-c 1000 -p 1 --rate 1) ;;
      esac
      "$bin" bench "mqtt://127.0.0.1:$port/$w" "${args[@]}" --duration "$secs" --warmup 2 \
        --server-pid "$pid" --json > "$out/$s.$w.$r.json" 2>/dev/null || echo '{}' > "$out/$s.$w.$r.json"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      echo "done: $r $s $w" >&2
    done
  done
done

PYTHONPATH=bench PYTHONDONTWRITEBYTECODE=1 python3 - "$out" "$reps" <<'PY'
import sys
from medians import medians, ratio
out, reps = sys.argv[1], int(sys.argv[2])
med = medians(out, reps)
rows = {}
for s in ["switchboard", "mosquitto"]:
    rows[s] = dict(
        d=med(s, "w1", lambda j: j.get("deliveries_per_sec")),
        cpu=med(s, "w1", lambda j: j.get("server_cpu_ns_per_delivery")),
        p99w1=med(s, "w1", lambda j: j["latency_ms"]["p99"]),
        w2=med(s, "w2", lambda j: j.get("delivered_ratio")),
        p99=med(s, "w2", lambda j: j["latency_ms"]["p99"]),
        cpu2=med(s, "w2", lambda j: j.get("server_cpu_ns_per_delivery")),
        w2s=med(s, "w2s", lambda j: j.get("delivered_ratio")),
        p99s=med(s, "w2s", lambda j: j["latency_ms"]["p99"]),
        cpus=med(s, "w2s", lambda j: j.get("server_cpu_ns_per_delivery")),
        rss=med(s, "idle", lambda j: j.get("server_rss_bytes_per_connection")),
    )
b = rows["mosquitto"]
print(f"medians of {reps} runs")
print("| broker | W1 deliveries/s | W1 p99 | W1 CPU/delivery | W2 delivered | W2 p99 | W2 CPU/delivery | W2/10 delivered | W2/10 p99 | W2/10 CPU/delivery | idle RSS/conn |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for s, v in rows.items():
    print(f"| {s} | {v['d']:,.0f}{ratio(v['d'], b['d'])} | {v['p99w1']:,.1f} ms "
          f"| {v['cpu']:,.0f} ns{ratio(v['cpu'], b['cpu'])} | {v['w2'] * 100:.1f} % "
          f"| {v['p99']:,.1f} ms | {v['cpu2']:,.0f} ns{ratio(v['cpu2'], b['cpu2'])} "
          f"| {v['w2s'] * 100:.1f} % | {v['p99s']:,.1f} ms "
          f"| {v['cpus']:,.0f} ns{ratio(v['cpus'], b['cpus'])} "
          f"| {v['rss'] / 1024:,.1f} KiB |")
PY
