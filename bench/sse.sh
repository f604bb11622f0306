#!/usr/bin/env bash
# SSE fan-out beside WebSocket (issue 17: SSE within 2x WebSocket): bench/transports.sh with
# ws, sse (HTTP publishers) and sse-ws (WebSocket publishers: SSE's own delivery cost).
#   bench/sse.sh [seconds] [repetitions]    prints a markdown table (medians of repetitions)
exec "$(dirname "$0")/transports.sh" "${1:-8}" "${2:-3}" ws sse sse-ws
