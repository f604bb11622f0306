#!/usr/bin/env bash
# What webhooks cost a busy room: W1 (100 WebSocket connections, 10 publishing, window 32) on a
# fresh release server, side by side, with no webhook, with one whose receiver is down
# (connection refused, so every POST fails and is retried with backoff), and with one whose
# receiver answers 204 at once (a small Python server on loopback). Every message makes one
# webhook event. Prints deliveries/s, server CPU per delivery and p99 per case, and what the
# server's metrics say was sent, failed and dropped.
#   bench/webhooks.sh [seconds] [repetitions]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
reps=${2:-2}
cargo build --release --locked -q
bin=$PWD/target/release/switchboard
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pid= receiver=
trap 'kill $pid $receiver 2>/dev/null || true' EXIT

receiver_port=$(free_port)
python3 - "$receiver_port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(204); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
receiver=$!
down_port=$(free_port)

metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
for r in $(seq 1 "$reps"); do
  for case in none down up; do
    port=$(free_port)
    hooks=()
    case $case in
      down) hooks=(--webhook "http://127.0.0.1:$down_port/hook" --webhook-secret bench-secret-0123456789) ;;
      up) hooks=(--webhook "http://127.0.0.1:$receiver_port/hook" --webhook-secret bench-secret-0123456789) ;;
    esac
    "$bin" serve --tcp off --udp off --mqtt off --grpc off --http "127.0.0.1:$port" --store memory \
      --publish-rate 0 --connection-rate 0 --log error "${hooks[@]}" &
    pid=$!
    for _ in $(seq 1 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    report=$("$bin" bench "ws://127.0.0.1:$port/ws?room=w1" -c 100 -p 10 --window 32 \
      --duration "$secs" --warmup 2 --server-pid "$pid" --json)
    sleep 1
    python3 - "$case" "$r" "$report" \
      "$(metric "$port" switchboard_webhook_events_sent_total)" \
      "$(metric "$port" switchboard_webhook_failures_total)" \
      "$(metric "$port" switchboard_webhook_events_dropped_total)" \
      "$(metric "$port" switchboard_messages_published_total)" <<'PY'
import json, sys
case, r, report, sent, failed, dropped, published = sys.argv[1:]
j = json.loads(report)
print(f"| {case} | {r} | {j['deliveries_per_sec']:,.0f} | {j['server_cpu_ns_per_delivery']:,.0f} ns "
      f"| {j['latency_ms']['p99']:.1f} ms | {published or 0} | {sent or 0} | {failed or 0} | {dropped or 0} |")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done | { echo "| webhook | run | W1 deliveries/s | CPU/delivery | p99 | messages | events sent | POSTs failed | events dropped |"; echo "|---|---|---|---|---|---|---|---|---|"; cat; }
